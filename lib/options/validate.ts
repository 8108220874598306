// The one place options are checked and defaulted (the defaults the README documents). The rest of the
// code receives a complete `Config` and never re-checks it.
import type { HTTPMethods } from 'fastify'
import type { Registry } from 'prom-client'
import type { UpstreamOptions, RetryCondition, UpstreamProtocol, PoolInput, RouteInput, TimeoutsInput, RetryInput } from './types.js'
import { HEALTH_CHECK_PATH } from '../pool/grpc-health.js'
import type {
  Config, PoolConfig, RouteConfig, TargetConfig, Timeouts, RetryConfig, BalancerConfig,
  HealthConfig, OutlierConfig, ErrorsConfig, StatusConfig, StoryStoreConfig, AuthConfig, RateLimitConfig,
  MatchRuleConfig, MatchCondition, SplitShare, MirrorConfig, StickyConfig, CacheConfig
} from './config.js'
import {
  OptionsError, object, optionalObject, join, integer, duration, durationOrOff, ratio, boolean, string, oneOf,
  array, httpStatus, fail, isPlainObject
} from './check.js'

// `total` is off: Server-Sent Events, long polling and downloads last as long as they keep
// sending; a stalled one is caught by `body` (60 s, as nginx's proxy_read_timeout).
export const DEFAULT_TIMEOUTS: Timeouts = { connect: 2000, headers: 30000, body: 60000, total: false }
/** RFC 9110 §9.2.2: methods whose repetition has the same effect as one request. */
export const IDEMPOTENT_METHODS = ['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']
export const PROXIED_METHODS: HTTPMethods[] = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']
const RETRY_CONDITIONS: RetryCondition[] = ['connect-failure', 'refused-stream', 'reset', 'timeout', '5xx']
// `reset` too, for idempotent methods only (retry.methods): a target killed under load then
// costs GET clients nothing, as nginx's proxy_next_upstream default.
const DEFAULT_RETRY_ON: RetryCondition[] = ['connect-failure', 'refused-stream', 'reset']
const KNOWN_METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS', 'TRACE', 'SEARCH', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'REPORT', 'MKCALENDAR']

// Typed against the public option types, so a key added to one but not the other fails to compile.
const POOL_KEYS = ['targets', 'balancer', 'timeouts', 'connections', 'limits', 'health', 'outlier', 'slowStart', 'retry', 'tls', 'discovery', 'auth', 'panic', 'sticky', 'protocol'] as const satisfies ReadonlyArray<keyof PoolInput>
/** Fastify's own route options a route hands over as they are (routes[].onRequest, ...). */
const ROUTE_FASTIFY_KEYS = ['onRequest', 'preHandler', 'preValidation', 'config', 'constraints'] as const satisfies ReadonlyArray<keyof RouteInput>
const ROUTE_KEYS = ['prefix', 'pool', 'rewritePrefix', 'methods', 'websocket', 'grpc', 'timeouts', 'retry', 'rateLimit', 'bodyLimit', 'rewriteLocation', 'rewriteRequestHeaders', 'rewriteResponseHeaders', 'match', 'split', 'mirror', 'cache', ...ROUTE_FASTIFY_KEYS] as const satisfies ReadonlyArray<keyof RouteInput>
const TIMEOUT_KEYS = ['connect', 'headers', 'body', 'total'] as const satisfies ReadonlyArray<keyof TimeoutsInput>
const RETRY_KEYS = ['retries', 'on', 'statuses', 'methods', 'budget'] as const satisfies ReadonlyArray<keyof RetryInput>

// Options only @fastify/http-proxy takes: given here, they mean an app moving from it.
const HTTP_PROXY_KEYS = ['upstream', 'prefix', 'rewritePrefix', 'replyOptions', 'wsUpstream', 'websocket', 'httpMethods', 'preHandler', 'preValidation', 'undici', 'http2', 'base']

export function validateOptions (input: unknown): Config {
  if (isPlainObject(input) && input.pools === undefined) {
    const key = HTTP_PROXY_KEYS.find((name) => input[name] !== undefined)
    if (key !== undefined) throw new OptionsError(`options.${key}`, 'unknown option: this is an option of @fastify/http-proxy. Register the httpProxy export with these options as they are (import { httpProxy } from \'fastify-upstream\'), or describe the upstream as pools and routes (docs/migrating.md)')
  }
  const options = object('options', input, ['pools', 'routes', 'errors', 'status', 'metrics', 'rateLimit', 'requestIdHeader', 'tracing']) as Partial<UpstreamOptions>

  const poolsInput = object('pools', options.pools, [...Object.keys(options.pools ?? {})])
  if (Object.keys(poolsInput).length === 0) fail('pools', 'at least one pool', options.pools)
  const pools = new Map<string, PoolConfig>()
  for (const [name, pool] of Object.entries(poolsInput)) pools.set(name, validatePool(name, pool))

  const routesInput = array('routes', options.routes)
  if (routesInput.length === 0) fail('routes', 'at least one route', routesInput)
  const routes = routesInput.map((route, i) => validateRoute(join('routes', i), route, pools))
  const seen = new Map<string, number>()
  routes.forEach((route, i) => {
    const first = seen.get(route.prefix)
    if (first !== undefined) throw new OptionsError(`routes[${i}].prefix`, `"${route.prefix}" is already used by routes[${first}]`)
    seen.set(route.prefix, i)
  })

  return {
    pools,
    routes,
    errors: validateErrors(options.errors),
    status: validateStatus(options.status),
    metrics: validateMetrics(options.metrics),
    rateLimit: validateRateLimit(options.rateLimit, routes.some((route) => route.rateLimit !== null && route.rateLimit !== false)),
    requestIdHeader: headerName('requestIdHeader', options.requestIdHeader, 'x-request-id'),
    tracing: validateTracing(options.tracing)
  }
}

function validateTracing (input: unknown): Config['tracing'] {
  if (input === undefined) return 'auto'
  if (input === 'auto' || typeof input === 'boolean') return input
  fail('tracing', 'true, false or "auto"', input)
}

function validatePool (name: string, input: unknown): PoolConfig {
  const path = join('pools', name)
  const pool = object(path, input, POOL_KEYS)
  const targetsInput = array(join(path, 'targets'), pool.targets)
  if (targetsInput.length === 0) fail(join(path, 'targets'), 'at least one target', targetsInput)
  const targets = targetsInput.map((t, i) => validateTarget(join(join(path, 'targets'), i), t))
  const urls = new Set<string>()
  targets.forEach((target, i) => {
    if (urls.has(target.url)) throw new OptionsError(`${path}.targets[${i}]`, `"${target.url}" is listed twice`)
    urls.add(target.url)
  })

  const connections = optionalObject(join(path, 'connections'), pool.connections, ['perTarget', 'keepAlive', 'streams'])
  const limits = optionalObject(join(path, 'limits'), pool.limits, ['maxConcurrent', 'maxPending', 'queueTimeout'])
  const tls = optionalObject(join(path, 'tls'), pool.tls, ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'])
  const discovery = optionalObject(join(path, 'discovery'), pool.discovery, ['refresh', 'minTtl', 'maxTtl', 'timeout', 'servers', 'family'])
  const minTtl = duration(join(join(path, 'discovery'), 'minTtl'), discovery.minTtl, 1000)

  return {
    name,
    targets,
    balancer: validateBalancer(join(path, 'balancer'), pool.balancer),
    timeouts: validateTimeouts(join(path, 'timeouts'), pool.timeouts, DEFAULT_TIMEOUTS),
    connections: {
      // No cap by default, as nginx and HAProxy: a cap makes the next request wait behind
      // long-lived responses (SSE, slow readers) that hold their connections.
      perTarget: connections.perTarget === false ? Infinity : integer(join(join(path, 'connections'), 'perTarget'), connections.perTarget, Infinity, 1),
      keepAlive: duration(join(join(path, 'connections'), 'keepAlive'), connections.keepAlive, 4000),
      streams: integer(join(join(path, 'connections'), 'streams'), connections.streams, 100, 1)
    },
    limits: {
      maxConcurrent: integer(join(join(path, 'limits'), 'maxConcurrent'), limits.maxConcurrent, Infinity, 1),
      maxPending: integer(join(join(path, 'limits'), 'maxPending'), limits.maxPending, Infinity, 0),
      queueTimeout: duration(join(join(path, 'limits'), 'queueTimeout'), limits.queueTimeout, 1000)
    },
    health: pool.health === undefined ? null : validateHealth(join(path, 'health'), pool.health, oneOf(join(path, 'protocol'), pool.protocol, ['http1', 'h2', 'h2c'] as const, 'http1')),
    outlier: validateOutlier(join(path, 'outlier'), pool.outlier),
    slowStart: duration(join(path, 'slowStart'), pool.slowStart, 0, 0),
    retry: validateRetry(join(path, 'retry'), pool.retry, null),
    tls: {
      ...(tls.ca !== undefined ? { ca: tls.ca as string } : {}),
      ...(tls.cert !== undefined ? { cert: tls.cert as string } : {}),
      ...(tls.key !== undefined ? { key: tls.key as string } : {}),
      ...(tls.servername !== undefined ? { servername: string(join(join(path, 'tls'), 'servername'), tls.servername) } : {}),
      rejectUnauthorized: boolean(join(join(path, 'tls'), 'rejectUnauthorized'), tls.rejectUnauthorized, true)
    },
    discovery: {
      refresh: discovery.refresh === undefined || discovery.refresh === 'ttl' ? 'ttl' : duration(join(join(path, 'discovery'), 'refresh'), discovery.refresh, 0),
      minTtl,
      maxTtl: duration(join(join(path, 'discovery'), 'maxTtl'), discovery.maxTtl, Math.max(60000, minTtl), minTtl),
      timeout: duration(join(join(path, 'discovery'), 'timeout'), discovery.timeout, 2000),
      servers: discovery.servers === undefined ? null : dnsServers(join(join(path, 'discovery'), 'servers'), discovery.servers),
      family: oneOf(join(join(path, 'discovery'), 'family'), discovery.family, ['prefer-ipv4', 'prefer-ipv6', 'ipv4', 'ipv6', 'all'] as const, 'prefer-ipv4')
    },
    auth: validateAuth(join(path, 'auth'), pool.auth),
    panic: boolean(join(path, 'panic'), pool.panic, false),
    sticky: validateSticky(join(path, 'sticky'), pool.sticky),
    protocol: validateProtocol(join(path, 'protocol'), pool.protocol, targets)
  }
}

/** gRPC needs HTTP/2 to the targets: a route that says it carries gRPC needs a pool that speaks it. */
function validateGrpcRoute (path: string, input: unknown, pool: PoolConfig): boolean {
  const grpc = boolean(path, input, false)
  if (grpc && pool.protocol === 'http1') {
    throw new OptionsError(path, `gRPC needs HTTP/2 to the targets, and pool "${pool.name}" speaks HTTP/1.1 (protocol 'http1'); set protocol: 'h2c' (or 'h2' for https targets) on pool "${pool.name}"`)
  }
  return grpc
}

/**
 * 'h2' is HTTP/2 over TLS (ALPN), 'h2c' HTTP/2 in clear text: a target whose scheme says the
 * other is a contradiction an operator should hear of now, not as a protocol error per request.
 */
function validateProtocol (path: string, input: unknown, targets: TargetConfig[]): UpstreamProtocol {
  const protocol = oneOf(path, input, ['http1', 'h2', 'h2c'] as const, 'http1')
  const scheme = protocol === 'h2' ? 'https:' : protocol === 'h2c' ? 'http:' : null
  if (scheme === null) return protocol
  targets.forEach((target) => {
    const own = target.srv?.protocol ?? new URL(target.url).protocol
    if (own !== scheme) {
      throw new OptionsError(path, protocol === 'h2'
        ? `'h2' is HTTP/2 over TLS, but target "${target.url}" is http://; use 'h2c' for HTTP/2 in clear text, or an https:// URL`
        : `'h2c' is HTTP/2 in clear text, but target "${target.url}" is https://; use 'h2' for HTTP/2 over TLS, or an http:// URL`)
    }
  })
  return protocol
}

function validateTarget (path: string, input: unknown): TargetConfig {
  const target = typeof input === 'string' ? { url: input } : object(path, input, ['url', 'srv', 'protocol', 'weight', 'backup'])
  const urlPath = typeof input === 'string' ? path : join(path, 'url')
  const weight = integer(join(path, 'weight'), target.weight, 1, 1, 1000)
  const backup = boolean(join(path, 'backup'), target.backup, false)
  if (target.srv !== undefined) {
    if (target.url !== undefined) throw new OptionsError(join(path, 'url'), 'give either url or srv, not both')
    if (target.weight !== undefined) throw new OptionsError(join(path, 'weight'), 'not for SRV targets: each record carries its own weight')
    const name = string(join(path, 'srv'), target.srv)
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/.test(name)) fail(join(path, 'srv'), 'a DNS name such as "_http._tcp.api.service.consul"', name)
    const protocol = oneOf(join(path, 'protocol'), target.protocol ?? 'http', ['http', 'https'] as const)
    return { url: `srv+${protocol}://${name.toLowerCase()}`, weight, backup, srv: { name, protocol: `${protocol}:` } }
  }
  if (target.protocol !== undefined) throw new OptionsError(join(path, 'protocol'), 'only for SRV targets (give the scheme in url)')
  return { url: targetUrl(urlPath, target.url), weight, backup, srv: null }
}

/** DNS servers as `host:port` (or a bare IP): what Resolver.setServers takes. */
function dnsServers (path: string, input: unknown): string[] {
  const servers = array(path, input)
  if (servers.length === 0) fail(path, 'at least one "ip:port"', input)
  return servers.map((server, i) => {
    if (typeof server !== 'string' || !/^(\d{1,3}(\.\d{1,3}){3}(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?|[0-9A-Fa-f:]+)$/.test(server)) {
      fail(join(path, i), 'a DNS server address such as "10.0.0.53", "127.0.0.1:5353" or "[::1]:53"', server)
    }
    return server
  })
}

function targetUrl (path: string, value: unknown): string {
  if (typeof value !== 'string') fail(path, 'an http(s) URL', value)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    fail(path, 'an http(s) URL', value)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(path, 'an http(s) URL', value)
  if (url.username !== '' || url.password !== '') fail(path, 'a URL without credentials (use pools.<name>.auth)', value)
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    fail(path, 'an origin without path or query (map paths with routes[].rewritePrefix)', value)
  }
  return url.origin
}

function validateBalancer (path: string, input: unknown): BalancerConfig {
  if (input === undefined) return { kind: 'round-robin' }
  if (isPlainObject(input)) {
    const hash = object(path, input, ['hash']).hash
    if (typeof hash === 'string' && (hash === 'ip' || /^(header|cookie):[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(hash))) {
      return { kind: 'hash', key: hash as 'ip' }
    }
    fail(join(path, 'hash'), '"ip", "header:NAME" or "cookie:NAME"', hash)
  }
  return { kind: oneOf(path, input, ['round-robin', 'least-request', 'p2c-ewma', 'random'] as const) }
}

function validateTimeouts (path: string, input: unknown, base: Timeouts): Timeouts {
  const t = optionalObject(path, input, TIMEOUT_KEYS)
  return {
    connect: durationOrOff(join(path, 'connect'), t.connect, base.connect),
    headers: durationOrOff(join(path, 'headers'), t.headers, base.headers),
    body: durationOrOff(join(path, 'body'), t.body, base.body),
    total: durationOrOff(join(path, 'total'), t.total, base.total)
  }
}

function validateHealth (path: string, input: unknown, protocol: UpstreamProtocol): HealthConfig {
  const h = object(path, input, ['path', 'grpc', 'interval', 'timeout', 'expect', 'healthyAfter', 'unhealthyAfter'])
  const grpc = h.grpc === undefined ? null : optionalObject(join(path, 'grpc'), h.grpc, ['service'])
  if (grpc !== null && protocol === 'http1') throw new OptionsError(join(path, 'grpc'), 'gRPC health checks need HTTP/2 to the targets: set protocol: \'h2c\' (or \'h2\') on the pool')
  if (grpc !== null && h.path !== undefined) throw new OptionsError(join(path, 'path'), 'give health.path or health.grpc, not both')
  const service = grpc === null ? null : grpc.service === undefined || grpc.service === '' ? '' : string(join(join(path, 'grpc'), 'service'), grpc.service)
  const healthPath = grpc !== null ? HEALTH_CHECK_PATH : string(join(path, 'path'), h.path)
  if (!healthPath.startsWith('/')) fail(join(path, 'path'), 'a path starting with "/"', healthPath)
  const expect = optionalObject(join(path, 'expect'), h.expect, ['status', 'body'])
  const body = expect.body
  if (body !== undefined && typeof body !== 'string' && !(body instanceof RegExp)) {
    fail(join(join(path, 'expect'), 'body'), 'a string or a RegExp', body)
  }
  const interval = duration(join(path, 'interval'), h.interval, 5000)
  return {
    path: healthPath,
    grpc: service === null ? null : { service },
    interval,
    timeout: duration(join(path, 'timeout'), h.timeout, Math.min(2000, interval)),
    expect: { ...statusExpectation(join(join(path, 'expect'), 'status'), expect.status), body: body ?? null },
    healthyAfter: integer(join(path, 'healthyAfter'), h.healthyAfter, 2, 1),
    unhealthyAfter: integer(join(path, 'unhealthyAfter'), h.unhealthyAfter, 3, 1)
  }
}

function statusExpectation (path: string, input: unknown): HealthConfig['expect'] extends infer E ? Omit<E & object, 'body'> : never {
  if (input === undefined) input = '2xx'
  if (typeof input === 'string' && /^[1-5]xx$/.test(input)) {
    const klass = Number(input[0])
    return { status: (s) => Math.floor(s / 100) === klass, statusText: input }
  }
  if (typeof input === 'number') {
    const code = httpStatus(path, input)
    return { status: (s) => s === code, statusText: String(code) }
  }
  if (Array.isArray(input) && input.length > 0) {
    const codes = new Set(input.map((s, i) => httpStatus(join(path, i), s)))
    return { status: (s) => codes.has(s), statusText: [...codes].join(', ') }
  }
  if (isPlainObject(input)) {
    const range = object(path, input, ['from', 'to'])
    const from = httpStatus(join(path, 'from'), range.from)
    const to = httpStatus(join(path, 'to'), range.to)
    if (to < from) fail(join(path, 'to'), `a status >= from (${from})`, to)
    return { status: (s) => s >= from && s <= to, statusText: `${from}-${to}` }
  }
  return fail(path, '"1xx".."5xx", a status code, a list of codes or { from, to }', input)
}

function validateOutlier (path: string, input: unknown): OutlierConfig | null {
  if (input === false) return null
  const o = optionalObject(path, input, ['consecutiveFailures', 'ejectFor', 'maxEjectFor', 'maxEjectedPercent'])
  const ejectFor = duration(join(path, 'ejectFor'), o.ejectFor, 30000)
  return {
    consecutiveFailures: integer(join(path, 'consecutiveFailures'), o.consecutiveFailures, 5, 1),
    ejectFor,
    maxEjectFor: duration(join(path, 'maxEjectFor'), o.maxEjectFor, Math.max(300000, ejectFor), ejectFor),
    maxEjectedPercent: integer(join(path, 'maxEjectedPercent'), o.maxEjectedPercent, 50, 0, 100)
  }
}

function validateRetry (path: string, input: unknown, base: RetryConfig | null): RetryConfig {
  const r = optionalObject(path, input, RETRY_KEYS)
  const budget = optionalObject(join(path, 'budget'), r.budget, ['ratio', 'minPerSecond'])
  const list = <T> (key: string, fallback: ReadonlySet<T>, each: (p: string, v: unknown) => T): ReadonlySet<T> =>
    r[key] === undefined ? fallback : new Set(array(join(path, key), r[key]).map((v, i) => each(join(join(path, key), i), v)))
  return {
    retries: integer(join(path, 'retries'), r.retries, base?.retries ?? 2, 0, 10),
    on: list('on', base?.on ?? new Set<RetryCondition>(DEFAULT_RETRY_ON), (p, v) => oneOf(p, v, RETRY_CONDITIONS)),
    statuses: list('statuses', base?.statuses ?? new Set<number>(), httpStatus),
    methods: list('methods', base?.methods ?? new Set(IDEMPOTENT_METHODS), (p, v) => method(p, v)),
    budget: {
      ratio: ratio(join(join(path, 'budget'), 'ratio'), budget.ratio, base?.budget.ratio ?? 0.2),
      minPerSecond: integer(join(join(path, 'budget'), 'minPerSecond'), budget.minPerSecond, base?.budget.minPerSecond ?? 5, 0)
    }
  }
}

/**
 * Credentials are secrets: no message here repeats a value given under `auth` (a token pasted
 * where a function belongs, a header value), only its kind.
 */
function validateAuth (path: string, input: unknown): AuthConfig | null {
  if (input === undefined) return null
  if (!isPlainObject(input)) secret(path, '{ headers } or { token }', input)
  const a = object(path, input, ['headers', 'token'])
  if (a.headers === undefined && a.token === undefined) fail(path, '{ headers } or { token }', input)
  const headers: Record<string, string> = {}
  if (a.headers !== undefined) {
    const headersPath = join(path, 'headers')
    if (!isPlainObject(a.headers)) secret(headersPath, 'an object of header names and values', a.headers)
    for (const [name, value] of Object.entries(a.headers)) {
      const lower = headerName(join(headersPath, name), name)
      // Framing and routing are the gateway's; a credential is none of these.
      if (['host', 'content-length', 'transfer-encoding', 'connection'].includes(lower)) fail(join(headersPath, name), 'a header other than Host, Content-Length, Transfer-Encoding and Connection', name)
      if (typeof value !== 'string' || value === '') secret(join(headersPath, name), 'a non-empty string', value)
      if (!/^[\t\x20-\x7e\x80-\xff]+$/.test(value)) secret(join(headersPath, name), 'a header value (no line breaks or control characters)', 'a string')
      if (lower in headers) fail(join(headersPath, name), 'each header once (names are case-insensitive)', name)
      headers[lower] = value
    }
  }
  if (a.token !== undefined && typeof a.token !== 'function') secret(join(path, 'token'), 'an async function () => ({ value, expiresAt })', a.token)
  if (a.token !== undefined && 'authorization' in headers) {
    throw new OptionsError(join(join(path, 'headers'), 'authorization'), 'cannot be set beside auth.token, which is sent as Authorization: Bearer <value>')
  }
  return { headers, token: (a.token as AuthConfig['token']) ?? null }
}

/** fail(), saying only what kind of value was given: the value may be a credential. */
function secret (path: string, expected: string, got: unknown): never {
  const kind = got === null || got === undefined ? String(got) : Array.isArray(got) ? 'an array' : typeof got === 'object' ? 'an object' : `a ${typeof got}`
  throw new OptionsError(path, `expected ${expected}, got ${kind} (not shown: it may be a credential)`)
}

function validateRoute (path: string, input: unknown, pools: Map<string, PoolConfig>): RouteConfig {
  const r = object(path, input, ROUTE_KEYS)
  const prefix = string(join(path, 'prefix'), r.prefix)
  if (!prefix.startsWith('/')) fail(join(path, 'prefix'), 'a path starting with "/"', prefix)
  // The prefix is matched literally and swapped for rewritePrefix: a route parameter or a
  // wildcard in it would match paths the swap cannot map.
  if (/[:*?#]/.test(prefix)) fail(join(path, 'prefix'), 'a literal path, without ":" parameters, "*", "?" or "#"', prefix)
  const poolName = poolNamed(join(path, 'pool'), r.pool, pools)
  const pool = pools.get(poolName)!
  // A gRPC path (/package.Service/Method) goes as sent: a gRPC route keeps its prefix by default.
  const rewritePrefix = r.rewritePrefix === undefined ? (r.grpc === true ? prefix : '') : r.rewritePrefix
  if (typeof rewritePrefix !== 'string' || (rewritePrefix !== '' && !rewritePrefix.startsWith('/'))) {
    fail(join(path, 'rewritePrefix'), 'a path starting with "/" (or "")', rewritePrefix)
  }
  const methods = r.methods === undefined
    ? PROXIED_METHODS
    : array(join(path, 'methods'), r.methods).map((m, i) => method(join(join(path, 'methods'), i), m))
  if (methods.length === 0) fail(join(path, 'methods'), 'at least one method', r.methods)
  if (r.rateLimit !== undefined && r.rateLimit !== false && !isPlainObject(r.rateLimit)) {
    fail(join(path, 'rateLimit'), '@fastify/rate-limit route options or false', r.rateLimit)
  }
  for (const key of ['redis', 'onStoreError', 'skipOnError']) {
    // One store serves every route: where counts live is decided once, at the top level.
    if (isPlainObject(r.rateLimit) && r.rateLimit[key] !== undefined) {
      throw new OptionsError(join(join(path, 'rateLimit'), key), `set it once for all routes, as rateLimit.${key === 'skipOnError' ? 'onStoreError' : key}`)
    }
  }
  if (isPlainObject(r.rateLimit)) refuseWhitelist(join(path, 'rateLimit'), r.rateLimit)
  const match = array(join(path, 'match'), r.match, []).map((rule, i) => validateMatchRule(join(join(path, 'match'), i), rule, pools))
  const split = validateSplit(join(path, 'split'), r.split, pools)
  const route: RouteConfig = {
    prefix,
    pool: poolName,
    rewritePrefix,
    methods,
    websocket: boolean(join(path, 'websocket'), r.websocket, false),
    grpc: validateGrpcRoute(join(path, 'grpc'), r.grpc, pool),
    timeouts: validateTimeouts(join(path, 'timeouts'), r.timeouts, pool.timeouts),
    retry: validateRetry(join(path, 'retry'), r.retry, pool.retry),
    rateLimit: (r.rateLimit as RouteConfig['rateLimit']) ?? null,
    bodyLimit: validateBodyLimit(join(path, 'bodyLimit'), r.bodyLimit),
    rewriteLocation: boolean(join(path, 'rewriteLocation'), r.rewriteLocation, true),
    // Checked with the rest of `timeouts` above; only the route's own value counts here.
    tunnelIdle: isPlainObject(r.timeouts) && typeof r.timeouts.body === 'number' ? r.timeouts.body : null,
    rewriteRequestHeaders: optionalFunction(join(path, 'rewriteRequestHeaders'), r.rewriteRequestHeaders, '(request, headers) => headers') as RouteConfig['rewriteRequestHeaders'],
    rewriteResponseHeaders: optionalFunction(join(path, 'rewriteResponseHeaders'), r.rewriteResponseHeaders, '(headers, request, status) => headers') as RouteConfig['rewriteResponseHeaders'],
    fastify: validateRouteFastify(path, r),
    match,
    split,
    mirror: validateMirror(join(path, 'mirror'), r.mirror, pools),
    variants: new Map(),
    cache: validateCache(join(path, 'cache'), r.cache)
  }
  // Each other pool the route may choose serves it with its own timeouts and retry policy,
  // under the route's overrides.
  const variants = new Map<string, RouteConfig>()
  for (const name of [...match.map((rule) => rule.pool), ...split.map((share) => share.pool)]) {
    if (name === poolName || variants.has(name)) continue
    const other = pools.get(name)!
    variants.set(name, {
      ...route,
      pool: name,
      timeouts: validateTimeouts(join(path, 'timeouts'), r.timeouts, other.timeouts),
      retry: validateRetry(join(path, 'retry'), r.retry, other.retry)
    })
  }
  route.variants = variants
  return route
}

/** routes[].cache: `true` for the defaults, or an object. */
function validateCache (path: string, input: unknown): CacheConfig | null {
  if (input === undefined || input === false) return null
  if (input !== true && !isPlainObject(input)) fail(path, 'true, false or an object', input)
  const c = input === true ? {} : object(path, input, ['store', 'maxBytes', 'maxEntryBytes', 'staleIfError', 'staleWhileRevalidate', 'lock', 'prefix'])
  const maxBytes = integer(join(path, 'maxBytes'), c.maxBytes, 67_108_864, 1)
  const maxEntryBytes = integer(join(path, 'maxEntryBytes'), c.maxEntryBytes, Math.min(1_048_576, maxBytes), 1)
  if (maxEntryBytes > maxBytes) fail(join(path, 'maxEntryBytes'), `at most maxBytes (${maxBytes})`, maxEntryBytes)
  return {
    store: c.store === undefined || c.store === 'memory' ? 'memory' : validateRedis(join(path, 'store'), c.store, '"memory", a redis:// or rediss:// URL, or an ioredis client')!,
    maxBytes,
    maxEntryBytes,
    staleIfError: duration(join(path, 'staleIfError'), c.staleIfError, 0, 0),
    staleWhileRevalidate: duration(join(path, 'staleWhileRevalidate'), c.staleWhileRevalidate, 0, 0),
    lock: boolean(join(path, 'lock'), c.lock, true),
    prefix: string(join(path, 'prefix'), c.prefix, 'fastify-upstream:')
  }
}

/** The name of a pool that exists. */
function poolNamed (path: string, value: unknown, pools: Map<string, PoolConfig>): string {
  const name = string(path, value)
  if (!pools.has(name)) throw new OptionsError(path, `no pool named "${name}" (pools: ${[...pools.keys()].join(', ')})`)
  return name
}

const MATCH_KINDS = ['header', 'cookie', 'query'] as const

/** `{ header?, cookie?, query?, pool }`: at least one condition, each a string or a RegExp. */
function validateMatchRule (path: string, input: unknown, pools: Map<string, PoolConfig>): MatchRuleConfig {
  const rule = object(path, input, [...MATCH_KINDS, 'pool'])
  const conditions = (kind: typeof MATCH_KINDS[number]): MatchCondition[] => {
    const at = join(path, kind)
    return Object.entries(optionalObject(at, rule[kind], Object.keys(rule[kind] ?? {}))).map(([name, value]) => {
      if (typeof value === 'string') return { name: kind === 'header' ? name.toLowerCase() : name, value }
      if (!(value instanceof RegExp)) fail(join(at, name), 'a string or a RegExp', value)
      // A global or sticky RegExp keeps its position between tests: the same value would fit one
      // request and not the next.
      if (value.global || value.sticky) fail(join(at, name), 'a RegExp without the g or y flag', value)
      return { name: kind === 'header' ? name.toLowerCase() : name, value }
    })
  }
  const header = conditions('header')
  const cookie = conditions('cookie')
  const query = conditions('query')
  if (header.length + cookie.length + query.length === 0) fail(path, 'at least one condition in header, cookie or query', input)
  return { header, cookie, query, pool: poolNamed(join(path, 'pool'), rule.pool, pools) }
}

/** `{ <pool>: percent }`, at most 100 in all, to a hundredth of a percent. */
function validateSplit (path: string, input: unknown, pools: Map<string, PoolConfig>): SplitShare[] {
  if (input === undefined) return []
  const shares = object(path, input, Object.keys(isPlainObject(input) ? input : {}))
  let upTo = 0
  const out: SplitShare[] = []
  for (const [name, percent] of Object.entries(shares)) {
    const at = join(path, name)
    poolNamed(at, name, pools)
    if (typeof percent !== 'number' || !(percent >= 0 && percent <= 100) || Math.round(percent * 100) !== percent * 100) {
      fail(at, 'a percentage from 0 to 100 (to a hundredth)', percent)
    }
    upTo += Math.round(percent * 100)
    if (upTo > 10_000) fail(at, 'shares that add up to 100 or less (the rest go to the route\'s pool)', percent)
    out.push({ pool: name, upTo })
  }
  return out
}

function validateMirror (path: string, input: unknown, pools: Map<string, PoolConfig>): MirrorConfig | null {
  if (input === undefined) return null
  const m = object(path, input, ['pool', 'percent', 'maxInFlight', 'bodyLimit'])
  const percent = m.percent ?? 100
  if (typeof percent !== 'number' || !(percent >= 0 && percent <= 100)) fail(join(path, 'percent'), 'a percentage from 0 to 100', percent)
  return {
    pool: poolNamed(join(path, 'pool'), m.pool, pools),
    percent,
    maxInFlight: integer(join(path, 'maxInFlight'), m.maxInFlight, 100, 1),
    bodyLimit: integer(join(path, 'bodyLimit'), m.bodyLimit, 1_048_576, 0)
  }
}

function validateSticky (path: string, input: unknown): StickyConfig | null {
  if (input === undefined || input === false) return null
  const s = input === true ? {} : object(path, input, ['cookie', 'ttl'])
  const cookie = string(join(path, 'cookie'), s.cookie, 'upstream')
  // RFC 6265's cookie-name: an HTTP token.
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(cookie)) fail(join(path, 'cookie'), 'a cookie name (letters, digits, "-", "_", ...)', cookie)
  return { cookie, ttl: s.ttl === undefined ? null : duration(join(path, 'ttl'), s.ttl, 0, 1000) }
}

function optionalFunction (path: string, value: unknown, shape: string): ((...args: never[]) => unknown) | null {
  if (value === undefined) return null
  if (typeof value !== 'function') fail(path, `a function ${shape}`, value)
  return value as (...args: never[]) => unknown
}

/**
 * Hooks (a function or an array of them), `config` and `constraints` (objects): checked for
 * their shape only, so a mistake names the route's option; Fastify checks the rest as it does
 * for any route (a constraint strategy it does not know, a hook of the wrong arity).
 */
function validateRouteFastify (path: string, r: Record<string, unknown>): RouteConfig['fastify'] {
  const given: Record<string, unknown> = {}
  for (const key of ROUTE_FASTIFY_KEYS) {
    const value = r[key]
    if (value === undefined) continue
    const at = join(path, key)
    if (key === 'config' || key === 'constraints') {
      if (!isPlainObject(value)) fail(at, 'an object', value)
      // The gateway's own keys in a route's config: its route (rate-limit store) and its limit.
      if (key === 'config' && value.upstream !== undefined) throw new OptionsError(join(at, 'upstream'), 'reserved: the gateway keeps the route\'s pool and prefix there')
      if (key === 'config' && value.rateLimit !== undefined) throw new OptionsError(join(at, 'rateLimit'), `set ${join(path, 'rateLimit')} instead (its limits share the gateway's store)`)
    } else if (Array.isArray(value)) {
      value.forEach((hook, i) => { if (typeof hook !== 'function') fail(join(at, i), 'a hook function', hook) })
    } else if (typeof value !== 'function') {
      fail(at, 'a hook function or an array of them', value)
    }
    given[key] = value
  }
  return given as RouteConfig['fastify']
}

/**
 * Everything but `redis` and `onStoreError` is @fastify/rate-limit's and goes to it as it is.
 * Its `skipOnError` is set from `onStoreError`, so giving both would be two answers to one question.
 * Null: no limit anywhere. Routes with a limit of their own and no global one get `global: false`.
 */
function validateRateLimit (input: unknown, routesLimited: boolean): RateLimitConfig | null {
  if (input === undefined && !routesLimited) return null
  const given = input === undefined ? { global: false } : input
  if (!isPlainObject(given)) fail('rateLimit', 'an object', given)
  const { redis, onStoreError, ...plugin } = given
  if (plugin.skipOnError !== undefined) throw new OptionsError('rateLimit.skipOnError', 'use rateLimit.onStoreError ("allow" or "deny") instead')
  if (redis !== undefined && plugin.store !== undefined) throw new OptionsError('rateLimit.store', 'give rateLimit.redis or rateLimit.store, not both')
  refuseWhitelist('rateLimit', plugin)
  return {
    // The IETF draft's RateLimit-* names rather than the older X-RateLimit-* ones.
    plugin: { enableDraftSpec: true, ...plugin },
    redis: validateRedis('rateLimit.redis', redis),
    onStoreError: oneOf('rateLimit.onStoreError', onStoreError, ['allow', 'deny'], 'allow')
  }
}

/**
 * @fastify/rate-limit 11 dropped `whitelist`, its old name for `allowList`, and now ignores it:
 * passed on, the clients it names would be limited with no word said.
 */
function refuseWhitelist (path: string, options: Record<string, unknown>): void {
  if (options.whitelist !== undefined) throw new OptionsError(join(path, 'whitelist'), `use ${path}.allowList (the same values; @fastify/rate-limit 11 no longer reads whitelist)`)
}

function validateRedis (path: string, value: unknown, expected = 'a redis:// or rediss:// URL, or an ioredis client'): RateLimitConfig['redis'] {
  if (value === undefined) return null
  if (typeof value === 'string') {
    if (!/^rediss?:\/\/./.test(value) || !URL.canParse(value)) fail(path, expected, value)
    return value
  }
  // What the Redis counts (rate-limit-counts.ts) call on the client: ioredis's Redis or Cluster.
  const client = value as { defineCommand?: unknown, on?: unknown } | null
  if (typeof client?.defineCommand !== 'function' || typeof client.on !== 'function') fail(path, expected, value)
  return value as RateLimitConfig['redis']
}

/** Bodies stream, so none is limited unless the route says so (as HAProxy, Envoy, Caddy). */
function validateBodyLimit (path: string, value: unknown): number | null {
  if (value === false || value === undefined) return null
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    fail(path, 'a number of bytes (an integer >= 0) or false for no limit', value)
  }
  return value
}

/** 'public', 'full', 'auto' (full unless NODE_ENV is production) or a function of the request. */
function exposure (path: string, input: unknown): ErrorsConfig['expose'] {
  if (typeof input === 'function') return input as ErrorsConfig['expose']
  const expose = oneOf(path, input, ['public', 'full', 'auto'] as const)
  if (expose === 'auto') return process.env.NODE_ENV === 'production' ? 'public' : 'full'
  return expose
}

function validateErrors (input: unknown): ErrorsConfig {
  const e = optionalObject('errors', input, ['expose', 'proxyName', 'typeBase', 'contact', 'render', 'intercept'])
  const expose = exposure('errors.expose', e.expose ?? 'auto')
  const proxyName = string('errors.proxyName', e.proxyName, 'fastify-upstream')
  // RFC 9209 members are sf-tokens; a name that is not one would make Proxy-Status unparseable.
  if (!/^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$/.test(proxyName)) fail('errors.proxyName', 'a structured-field token (letters, digits, "-", ".", ...)', proxyName)
  if (e.render !== undefined && typeof e.render !== 'function') fail('errors.render', 'a function (problem, request) => body', e.render)
  return {
    expose,
    proxyName,
    typeBase: string('errors.typeBase', e.typeBase, 'urn:fastify-upstream:error:'),
    contact: e.contact === undefined ? null : string('errors.contact', e.contact),
    render: (e.render as ErrorsConfig['render']) ?? null,
    intercept: new Set(array('errors.intercept', e.intercept, []).map((s, i) => httpStatus(`errors.intercept[${i}]`, s)))
  }
}

function validateSurface (path: string, input: unknown, defaultPath: string, keys: readonly string[] = ['path']): { path: string, rest: Record<string, unknown> } | null {
  if (input === false) return null
  const s = optionalObject(path, input, keys)
  const at = string(join(path, 'path'), s.path, defaultPath)
  if (!at.startsWith('/')) fail(join(path, 'path'), 'a path starting with "/"', at)
  return { path: at, rest: s }
}

function validateMetrics (input: unknown): Config['metrics'] {
  const surface = validateSurface('metrics', input, '/metrics', ['path', 'registry'])
  if (surface === null) return null
  const registry = surface.rest.registry
  if (registry !== undefined && (typeof (registry as Registry | null)?.registerMetric !== 'function' || typeof (registry as Registry).metrics !== 'function')) {
    fail('metrics.registry', 'a prom-client Registry', registry)
  }
  return { path: surface.path, registry: (registry as Registry | undefined) ?? null }
}

const DIAGNOSIS_KEYS = ['avgLatency', 'p99Latency', 'queue', 'errorRate', 'outlier', 'minRequests', 'dnsLatency', 'tlsLatency']

function validateStatus (input: unknown): StatusConfig | null {
  const surface = validateSurface('status', input, '/_upstream', ['path', 'expose', 'keep', 'diagnosis', 'store'])
  if (surface === null) return null
  const s = surface.rest
  const d = optionalObject('status.diagnosis', s.diagnosis, DIAGNOSIS_KEYS)
  const outlier = d.outlier ?? 3
  if (typeof outlier !== 'number' || !(outlier > 1 && outlier < Infinity)) fail('status.diagnosis.outlier', 'a number > 1', outlier)
  return {
    path: surface.path,
    expose: s.expose === undefined ? null : exposure('status.expose', s.expose),
    keep: integer('status.keep', s.keep, 1000, 0, 1_000_000),
    diagnosis: {
      avgLatency: duration('status.diagnosis.avgLatency', d.avgLatency, 2000),
      p99Latency: duration('status.diagnosis.p99Latency', d.p99Latency, 5000),
      queue: ratio('status.diagnosis.queue', d.queue, 0.8),
      errorRate: ratio('status.diagnosis.errorRate', d.errorRate, 0.01),
      outlier,
      minRequests: integer('status.diagnosis.minRequests', d.minRequests, 20, 1),
      dnsLatency: duration('status.diagnosis.dnsLatency', d.dnsLatency, 200),
      tlsLatency: duration('status.diagnosis.tlsLatency', d.tlsLatency, 500)
    },
    store: validateStoryStore(s.store)
  }
}

/** status.store: a URL or client alone, or `{ redis, ttl, prefix }`. */
function validateStoryStore (input: unknown): StoryStoreConfig | null {
  if (input === undefined) return null
  const given = isPlainObject(input) ? input : { redis: input }
  const path = isPlainObject(input) ? 'status.store.redis' : 'status.store'
  const s = optionalObject('status.store', given, ['redis', 'ttl', 'prefix'])
  if (s.redis === undefined) fail(path, 'a redis:// or rediss:// URL, or an ioredis client', s.redis)
  return {
    redis: validateRedis(path, s.redis)!,
    ttl: duration('status.store.ttl', s.ttl, 86_400_000),
    prefix: string('status.store.prefix', s.prefix, 'fastify-upstream:')
  }
}

function method (path: string, value: unknown): HTTPMethods {
  const upper = typeof value === 'string' ? value.toUpperCase() : value
  return oneOf(path, upper, KNOWN_METHODS as HTTPMethods[])
}

function headerName (path: string, value: unknown, fallback?: string): string {
  const name = string(path, value, fallback)
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) fail(path, 'an HTTP header name', value)
  return name.toLowerCase()
}
