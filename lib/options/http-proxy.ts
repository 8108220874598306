// @fastify/http-proxy's options (and the @fastify/reply-from options it passes on) turned into
// the gateway's: one pool with the one upstream, one route on the prefix. Every option either
// maps to its equivalent or is refused here, at registration, with what to use instead — never
// accepted and silently ignored (the few that change nothing here are listed as such).
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { FastifyRequest, HTTPMethods } from 'fastify'
import type { PoolInput, RewriteRequestHeaders, RouteFastifyOptions, RouteInput, TimeoutsInput, TlsInput, UpstreamOptions } from './types.js'
import { OptionsError, array, boolean, describe, fail, isPlainObject, join, object, string } from './check.js'

/** The options of `@fastify/http-proxy` that `httpProxy` takes; see docs/migrating.md for each. */
export interface HttpProxyOptions {
  /** The upstream's URL; a path in it is the default `rewritePrefix`, as in @fastify/http-proxy. */
  upstream?: string
  /** The path prefix proxied (a literal path). ['/': every path] */
  prefix?: string
  /** What the prefix becomes upstream. [the upstream URL's path, else stripped] */
  rewritePrefix?: string
  /** Tunnel WebSocket upgrades to the upstream. [false] */
  websocket?: boolean
  /** Where WebSocket upgrades go: the upstream's own origin (ws:, wss:, http: or https:). [upstream] */
  wsUpstream?: string
  /** The methods proxied. [DELETE GET HEAD PATCH POST PUT OPTIONS] */
  httpMethods?: HTTPMethods[] | string[]
  /** Handed to the Fastify routes as it is. */
  preHandler?: RouteFastifyOptions['preHandler']
  /** The old name of `preHandler`. */
  beforeHandler?: RouteFastifyOptions['preHandler']
  /** Handed to the Fastify routes as it is; `request.body` is the raw request stream there (bodies stream through). */
  preValidation?: RouteFastifyOptions['preValidation']
  /** The routes' `config`, read by hooks as `request.routeOptions.config`. */
  config?: Record<string, unknown>
  constraints?: RouteFastifyOptions['constraints']
  /** Rewrite a relative `Location` to the prefix (and, here, a Location pointing at the upstream too). [true] */
  internalRewriteLocationHeader?: boolean
  replyOptions?: HttpProxyReplyOptions
  /** Connection settings: `connections`, `keepAliveTimeout`, `headersTimeout`, `bodyTimeout`, `connectTimeout`, `connect`/`tls` (ca, cert, key, servername, rejectUnauthorized), `pipelining: 1`. */
  undici?: Record<string, unknown>
  /** `agentOptions` (maxSockets, TLS) and `requestOptions` (timeout, TLS) as for Node's http agent. */
  http?: { agentOptions?: Record<string, unknown>, requestOptions?: Record<string, unknown> }
  /** Only `false`: HTTP/2 to the upstream is not available through httpProxy. */
  http2?: false
  /** Only the default, `['/', '/*']`: the prefix and everything under it. */
  routes?: string[]
  /** Only `true` (the default): bodies stream to the upstream as sent. */
  proxyPayloads?: true
  /** The methods retried after a reset (with the gateway's other retry rules). */
  retryMethods?: Array<HTTPMethods | 'TRACE'>
  /** No effect: the gateway has no URL cache. */
  cacheURLs?: number
  /** No effect: the gateway has no URL cache. */
  disableCache?: boolean
  /** No effect: the gateway logs failures only, one record each. */
  disableRequestLogging?: boolean
  /** No effect: request bodies are never rewritten. */
  contentTypesToEncode?: string[]
  /** No effect: the gateway always closes its connections with the app. */
  destroyAgent?: boolean
  /** Only `false`: the gateway keeps its own connections. */
  globalAgent?: false
}

export interface HttpProxyReplyOptions {
  /** `(request, headers) => headers`: what goes upstream (and in WebSocket handshakes), after the gateway's forwarding headers. */
  rewriteRequestHeaders?: RewriteRequestHeaders
  /** `(headers, request) => headers`: what comes back, before Location rewriting. */
  rewriteHeaders?: (headers: IncomingHttpHeaders, request: FastifyRequest) => IncomingHttpHeaders | OutgoingHttpHeaders
  /** Retries after a reset (0–10). */
  retriesCount?: number
  /** Both the headers and the body timeout, in ms. */
  timeout?: number
}

/** Refused options, each with what to use instead. Keys are option paths. */
export const REFUSED: Readonly<Record<string, string>> = {
  handler: 'the gateway\'s handler is the proxy; change the request in preHandler or replyOptions.rewriteRequestHeaders, or answer from a route of your own',
  preRewrite: 'paths map from prefix to rewritePrefix; rewrite other URLs with Fastify\'s rewriteUrl server option, which runs before routing',
  base: 'give the upstream URL as upstream',
  wsServerOptions: 'the gateway does not end WebSockets: it tunnels the upstream\'s own handshake and frames, so subprotocols, extensions and payload limits are the upstream\'s; check clients in a preHandler',
  wsClientOptions: 'the handshake reaches the upstream with every header the client sent (not only cookie) and its query; add or change headers with replyOptions.rewriteRequestHeaders',
  wsReconnect: 'a tunnel ends when either side closes and the client reconnects; its new handshake goes through the pool\'s health checks and connect retries',
  wsHooks: 'frames pass through the tunnel untouched; there are no per-message hooks',
  retryDelay: 'a failed try is retried at once (with a short jittered backoff) on another target, within a retry budget; see the main plugin\'s retry option',
  maxRetriesOn503: 'an upstream 503 reaches the client as sent; to retry it on another target use the main plugin\'s retry.statuses: [503]',
  balancedPoolOptions: 'several targets are a pool of the main plugin (pools.<name>.targets), with its balancer option',
  'replyOptions.onError': 'the gateway answers failures itself (problem+json, HTML or text, with Proxy-Status and one log record); shape the answer with the main plugin\'s errors option (errors.render, errors.expose)',
  'replyOptions.onResponse': 'the answer streams through Fastify\'s reply: change its headers with replyOptions.rewriteHeaders, its body in an onSend hook',
  'replyOptions.getUpstream': 'a pool\'s targets are known at registration (health checks, metrics, the status page): list the upstreams as pools of the main plugin and choose per request with routes[].match (a header, cookie or query) or split, or register httpProxy once per upstream and choose by prefix or constraints',
  'replyOptions.queryString': 'the query reaches the upstream byte for byte; rewrite URLs with Fastify\'s rewriteUrl server option',
  'replyOptions.body': 'request bodies stream to the upstream as sent',
  'replyOptions.contentType': 'request bodies stream to the upstream as sent, with their Content-Type',
  'replyOptions.method': 'the request reaches the upstream with its own method',
  'replyOptions.retryDelay': 'a failed try is retried at once (with a short jittered backoff) on another target, within a retry budget',
  'undici.proxy': 'the gateway connects to its targets directly',
  'config.rateLimit': 'the gateway keeps a route\'s rate limit itself (its 429 in the gateway\'s format, counts shareable through Redis): give it as the plugin\'s routes[].rateLimit; a global @fastify/rate-limit of the app still applies',
  logLevel: 'Fastify applies it to encapsulated plugins only, and the gateway shares the app\'s context; its failure records are at error (5xx) and warn (4xx), and it logs nothing for requests that succeed',
  'http.agents': 'the gateway keeps its own keep-alive pool per target; tune it with undici.connections and undici.keepAliveTimeout (or the main plugin\'s connections option)'
}

const TOP_KEYS = [
  'upstream', 'prefix', 'rewritePrefix', 'websocket', 'wsUpstream', 'httpMethods', 'preHandler', 'beforeHandler', 'preValidation',
  'config', 'constraints', 'internalRewriteLocationHeader', 'replyOptions', 'undici', 'http', 'http2', 'routes', 'proxyPayloads',
  'retryMethods', 'cacheURLs', 'disableCache', 'disableRequestLogging', 'contentTypesToEncode', 'destroyAgent', 'globalAgent',
  ...Object.keys(REFUSED).filter((key) => !key.includes('.'))
]
const TLS_KEYS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'] as const

/** What `httpProxy` registers: the gateway's options for one pool and one route. */
export function fromHttpProxy (input: unknown): UpstreamOptions {
  const o = object('options', input, TOP_KEYS)
  for (const [path, instead] of Object.entries(REFUSED)) {
    const [key, sub] = path.split('.') as [string, string | undefined]
    const given = sub === undefined ? o[key] : isPlainObject(o[key]) ? o[key][sub] : undefined
    if (given !== undefined) refuse(path, instead)
  }
  if (o.http2 !== undefined && o.http2 !== false) refuse('http2', 'HTTP/2 to the upstream is not available through httpProxy yet; the gateway speaks HTTP/1.1 to its targets (clients may still use HTTP/2)')
  if (o.proxyPayloads !== undefined && o.proxyPayloads !== true) refuse('proxyPayloads', 'bodies always stream to the upstream as sent; a body that must be parsed or changed first needs a route of your own')
  if (o.globalAgent !== undefined && o.globalAgent !== false) refuse('globalAgent', 'the gateway connects to its targets with its own keep-alive pools, never through a global dispatcher or agent')
  if (o.routes !== undefined && !isDefaultRoutes(o.routes)) refuse('routes', 'the prefix and every path under it are proxied; to proxy fewer paths, give a longer prefix (one registration per path)')
  for (const key of ['cacheURLs', 'disableCache', 'disableRequestLogging', 'contentTypesToEncode', 'destroyAgent']) checkHarmless(key, o[key])

  const prefix = routePrefix(o.prefix)
  const upstream = o.upstream === undefined || o.upstream === '' ? null : httpUrl('upstream', o.upstream)
  const wsUpstream = o.wsUpstream === undefined ? null : httpUrl('wsUpstream', o.wsUpstream)
  if (upstream === null && wsUpstream === null) {
    if (isPlainObject(o.replyOptions) && o.replyOptions.getUpstream !== undefined) refuse('replyOptions.getUpstream', REFUSED['replyOptions.getUpstream']!)
    fail('upstream', 'an http(s) URL', o.upstream)
  }
  if (wsUpstream !== null && upstream !== null && wsUpstream.origin !== upstream.origin) {
    refuse('wsUpstream', `WebSocket upgrades go to the route's pool, the upstream's origin (${upstream.origin}); to send them elsewhere, register httpProxy a second time with upstream: "${o.wsUpstream as string}" and a prefix of its own`)
  }
  const target = (upstream ?? wsUpstream)!

  const reply = replyOptions(o.replyOptions)
  const undici = connectionOptions(o.undici, o.http)
  const websocket = boolean('websocket', o.websocket, false)
  if (wsUpstream !== null && !websocket) throw new OptionsError('wsUpstream', 'only with websocket: true')
  if (o.preHandler !== undefined && o.beforeHandler !== undefined) throw new OptionsError('beforeHandler', 'the old name of preHandler: give one of them')

  const route: RouteInput = {
    prefix,
    pool: prefix,
    rewritePrefix: rewritePrefix(o.rewritePrefix, target),
    ...(o.httpMethods !== undefined ? { methods: array('httpMethods', o.httpMethods) as HTTPMethods[] } : {}),
    ...(websocket ? { websocket } : {}),
    ...(o.internalRewriteLocationHeader !== undefined ? { rewriteLocation: boolean('internalRewriteLocationHeader', o.internalRewriteLocationHeader, true) } : {}),
    ...fastifyRouteOptions(o),
    ...reply.route,
    ...(undici.timeouts !== null || reply.timeouts !== null ? { timeouts: { ...undici.timeouts, ...reply.timeouts } } : {}),
    ...retry(o.retryMethods, reply.retries)
  }
  const pool: PoolInput = {
    targets: [target.origin],
    ...(undici.connections !== null ? { connections: undici.connections } : {}),
    ...(undici.tls !== null ? { tls: undici.tls } : {})
  }
  return { pools: { [prefix]: pool }, routes: [route] }
}

function refuse (path: string, instead: string): never {
  throw new OptionsError(path, `not taken by httpProxy: ${instead} (docs/migrating.md)`)
}

function isDefaultRoutes (routes: unknown): boolean {
  return Array.isArray(routes) && routes.length === 2 && routes.includes('/') && routes.includes('/*')
}

/** Accepted for an app that moves as it is; they change nothing here (docs/migrating.md says why). */
function checkHarmless (key: string, value: unknown): void {
  if (value === undefined) return
  const ok = key === 'cacheURLs' ? typeof value === 'number' : key === 'contentTypesToEncode' ? Array.isArray(value) : typeof value === 'boolean'
  if (!ok) fail(key, key === 'cacheURLs' ? 'a number' : key === 'contentTypesToEncode' ? 'an array' : 'true or false', value)
}

/** @fastify/http-proxy's prefix ('' or none: every path) as a route prefix. */
function routePrefix (input: unknown): string {
  if (input === undefined || input === '' || input === '/') return '/'
  const prefix = string('prefix', input)
  if (prefix.includes(':') || prefix.includes('*')) {
    refuse('prefix', `a prefix is a literal path, without parameters; the path after it passes as it is, so prefix: "${prefix.split(/\/[:*]/)[0]}" with rewritePrefix mapping its start proxies the same paths`)
  }
  if (!prefix.startsWith('/')) fail('prefix', 'a path starting with "/"', prefix)
  // '/api/' serves '/api' and everything under it, as '/api' does.
  return prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix
}

/** As @fastify/http-proxy: the given rewritePrefix, else the upstream URL's path; '/' strips. */
function rewritePrefix (input: unknown, upstream: URL): string {
  const given = input === undefined || input === '' ? upstream.pathname : string('rewritePrefix', input)
  if (given.includes(':')) refuse('rewritePrefix', 'route parameters (":id") are not substituted; the path after the prefix passes as it is')
  if (!given.startsWith('/')) fail('rewritePrefix', 'a path starting with "/"', given)
  return given.replace(/\/+$/, '')
}

function httpUrl (path: string, value: unknown): URL {
  if (typeof value !== 'string' || !URL.canParse(value)) fail(path, 'an http(s) URL', value)
  const url = new URL(value.replace(/^ws(s?):/i, 'http$1:'))
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(path, 'an http(s) or ws(s) URL', value)
  if (url.username !== '' || url.password !== '') fail(path, 'a URL without credentials (send them with replyOptions.rewriteRequestHeaders)', value)
  return url
}

/** Handed on as they are; the gateway checks their shape (its paths are translated back in http-proxy.ts). */
function fastifyRouteOptions (o: Record<string, unknown>): RouteFastifyOptions {
  const route: Record<string, unknown> = {}
  for (const key of ['preHandler', 'preValidation', 'config', 'constraints']) if (o[key] !== undefined) route[key] = o[key]
  if (o.beforeHandler !== undefined) route.preHandler = o.beforeHandler
  return route as RouteFastifyOptions
}

interface ReplyMapping {
  route: Partial<RouteInput>
  timeouts: TimeoutsInput | null
  retries: number | null
}

function replyOptions (input: unknown): ReplyMapping {
  const keys = ['rewriteRequestHeaders', 'rewriteHeaders', 'retriesCount', 'timeout', ...Object.keys(REFUSED).filter((k) => k.startsWith('replyOptions.')).map((k) => k.slice('replyOptions.'.length))]
  const r = input === undefined ? {} : object('replyOptions', input, keys)
  const route: Partial<RouteInput> = {}
  for (const key of ['rewriteRequestHeaders', 'rewriteHeaders']) {
    if (r[key] !== undefined && typeof r[key] !== 'function') fail(`replyOptions.${key}`, 'a function', r[key])
  }
  if (r.rewriteRequestHeaders !== undefined) route.rewriteRequestHeaders = r.rewriteRequestHeaders as RewriteRequestHeaders
  const rewriteHeaders = r.rewriteHeaders as HttpProxyReplyOptions['rewriteHeaders']
  // reply-from's (headers, request); the gateway also passes the status, which it has no use for.
  if (rewriteHeaders !== undefined) route.rewriteResponseHeaders = function rewriteHeadersOfHttpProxy (headers, request) { return rewriteHeaders(headers, request) as OutgoingHttpHeaders }
  const timeout = r.timeout === undefined ? null : milliseconds('replyOptions.timeout', r.timeout)
  return {
    route,
    timeouts: timeout === null ? null : { headers: timeout, body: timeout },
    retries: r.retriesCount === undefined ? null : count('replyOptions.retriesCount', r.retriesCount, 10)
  }
}

function retry (methods: unknown, retries: number | null): Partial<RouteInput> {
  if (methods === undefined && retries === null) return {}
  return {
    retry: {
      ...(retries !== null ? { retries } : {}),
      ...(methods !== undefined ? { methods: array('retryMethods', methods) as string[] } : {})
    }
  }
}

interface ConnectionMapping {
  connections: PoolInput['connections'] | null
  timeouts: TimeoutsInput | null
  tls: TlsInput | null
}

const UNDICI_KEYS = ['connections', 'keepAliveTimeout', 'headersTimeout', 'bodyTimeout', 'connectTimeout', 'connect', 'tls', 'pipelining', 'proxy']

/** undici's (or Node http's) connection settings, as the pool's and the route's options. */
function connectionOptions (undiciInput: unknown, httpInput: unknown): ConnectionMapping {
  const connections: NonNullable<PoolInput['connections']> = {}
  const timeouts: TimeoutsInput = {}
  const tls: TlsInput = {}
  if (undiciInput !== undefined) {
    const dispatcher = isPlainObject(undiciInput) && (typeof undiciInput.request === 'function' || typeof undiciInput.dispatch === 'function')
    if (!isPlainObject(undiciInput) || dispatcher) refuse('undici', `a Dispatcher of your own (${dispatcher ? 'an object with request()' : describe(undiciInput)}) is not used: the gateway keeps its own keep-alive pool per target; give its settings as an object`)
    const u = object('undici', undiciInput, UNDICI_KEYS)
    if (u.connections !== undefined && u.connections !== null) connections.perTarget = count('undici.connections', u.connections, Number.MAX_SAFE_INTEGER, 1)
    if (u.keepAliveTimeout !== undefined) connections.keepAlive = milliseconds('undici.keepAliveTimeout', u.keepAliveTimeout)
    // undici's 0 turns a timeout off.
    if (u.headersTimeout !== undefined) timeouts.headers = offOrMilliseconds('undici.headersTimeout', u.headersTimeout)
    if (u.bodyTimeout !== undefined) timeouts.body = offOrMilliseconds('undici.bodyTimeout', u.bodyTimeout)
    if (u.connectTimeout !== undefined) timeouts.connect = offOrMilliseconds('undici.connectTimeout', u.connectTimeout)
    if (u.pipelining !== undefined && u.pipelining !== 1) refuse('undici.pipelining', 'one request at a time per connection (pipelining: 1); more connections with undici.connections')
    for (const key of ['connect', 'tls'] as const) {
      if (u[key] === undefined) continue
      const c = object(`undici.${key}`, u[key], key === 'connect' ? [...TLS_KEYS, 'timeout'] : TLS_KEYS)
      if (c.timeout !== undefined) timeouts.connect = offOrMilliseconds('undici.connect.timeout', c.timeout)
      Object.assign(tls, tlsOptions(`undici.${key}`, c))
    }
  }
  if (httpInput !== undefined) {
    const h = object('http', httpInput, ['agentOptions', 'requestOptions', 'agents'])
    if (h.agentOptions !== undefined) {
      const a = object('http.agentOptions', h.agentOptions, ['keepAlive', 'keepAliveMsecs', 'maxSockets', ...TLS_KEYS])
      if (a.maxSockets !== undefined) connections.perTarget = count('http.agentOptions.maxSockets', a.maxSockets, Number.MAX_SAFE_INTEGER, 1)
      if (a.keepAlive === false) refuse('http.agentOptions.keepAlive', 'connections to targets are always kept alive; set how long an idle one stays with undici.keepAliveTimeout')
      if (a.keepAliveMsecs !== undefined) milliseconds('http.agentOptions.keepAliveMsecs', a.keepAliveMsecs)
      Object.assign(tls, tlsOptions('http.agentOptions', a))
    }
    if (h.requestOptions !== undefined) {
      const q = object('http.requestOptions', h.requestOptions, ['timeout', ...TLS_KEYS])
      if (q.timeout !== undefined) {
        const ms = offOrMilliseconds('http.requestOptions.timeout', q.timeout)
        timeouts.headers = ms
        timeouts.body = ms
      }
      Object.assign(tls, tlsOptions('http.requestOptions', q))
    }
  }
  return {
    connections: Object.keys(connections).length > 0 ? connections : null,
    timeouts: Object.keys(timeouts).length > 0 ? timeouts : null,
    tls: Object.keys(tls).length > 0 ? tls : null
  }
}

function tlsOptions (path: string, input: Record<string, unknown>): TlsInput {
  const tls: Record<string, unknown> = {}
  for (const key of TLS_KEYS) if (input[key] !== undefined) tls[key] = key === 'rejectUnauthorized' ? boolean(join(path, key), input[key], true) : input[key]
  return tls as TlsInput
}

function milliseconds (path: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 1) fail(path, 'a duration in milliseconds >= 1', value)
  return value
}

function offOrMilliseconds (path: string, value: unknown): number | false {
  return value === 0 ? false : milliseconds(path, value)
}

function count (path: string, value: unknown, max: number, min = 0): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) fail(path, `an integer from ${min} to ${max}`, value)
  return value
}
