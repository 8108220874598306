// Each `routes[]` entry becomes a pair of Fastify routes, `<prefix>` and `<prefix>/*`, in a
// scope of their own: real routes, shown by printRoutes(), running the app's hooks. Their
// handler maps the path, copies the headers once and hands the request to an Exchange, which
// sends it upstream on undici and relays the answer (relay.ts).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import type { Config, RouteConfig } from '../options/config.js'
import type { RouteRouter, Routed } from '../routing/router.js'
import type { Mirror } from './mirror.js'
import { Exchange, exchangeOf, type ExchangeCache, type ExchangeEvents } from './exchange.js'
import type { Caches } from '../cache/caches.js'
import { keyPool } from '../cache/key.js'
import { rewriteLocations } from './location.js'
import { closeConnectionAfter, cutAnswer, forwardRequestHeaders, isGrpc, viaContains, viaPseudonym } from './forwarding.js'
import { grpcOverHttp1, grpcTrailers } from '../errors/grpc.js'
import { bodyAfterUpgrade } from './upgrade-body.js'
import { PathMapper, type RouterMatching } from './path.js'
import { UnsafePathError } from '../errors/codes.js'
import type { RelayRoute } from './relay.js'
import { logFailure, logClientAborted, logRecovered, logServedStale } from '../errors/log.js'
import { createErrorHandlers } from '../errors/handlers.js'
import { makeFailure } from '../errors/failure.js'
import { classifyClientFault, ensureSentence, GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import { rewriteRequest, type RewrittenRequest } from './rewrite.js'
import { isFullExposure, proxyStatusMember } from '../errors/problem.js'
import { isWebSocketHandshake, type WebSockets } from './websocket.js'
import type { Ending, Recorder } from '../observe/recorder.js'
import type { Tracing } from '../observe/tracing.js'

export async function registerRoute (app: FastifyInstance, config: Config, route: RouteConfig, router: RouteRouter, mirror: Mirror | null, websockets: WebSockets | null = null, recorder: Recorder | null = null, tracing: Tracing | null = null, caches: Caches | null = null): Promise<void> {
  /** The route's own pool: the one a request is answered for before routing chooses. */
  const pool = router.pool
  /** The route may send a request to another pool than its own (match, split). */
  const chooses = route.match.length > 0 || route.split.length > 0
  const settings = { proxyName: config.errors.proxyName, requestIdHeader: config.requestIdHeader, via: viaPseudonym(config, config.errors.proxyName) }
  const { answer, errorHandler, notFoundHandler } = createErrorHandlers(config, pool.name)

  /** What the recorder keeps of an exchange that ended with the client answered `status`. */
  const ending = (exchange: Exchange, status: number): Ending => ({
    id: String(exchange.request.id),
    method: exchange.request.method,
    route: route.prefix,
    pool: exchange.pool.name,
    // An address that has left the DNS answer counts in its pool's totals only: its own series
    // are dropped when it leaves (UpstreamPool.onTargetRemoved) and must not be made again.
    target: exchange.target !== null && !exchange.target.removed ? exchange.target.hostPort : null,
    status,
    ms: exchange.ms,
    attempts: exchange.attempts,
    poolState: () => exchange.pool.targets.map((t) => ({ target: t.hostPort, state: t.state() }))
  })

  const events: ExchangeEvents = {
    failed (exchange, failure) {
      if (exchange.cache?.failed(exchange, failure) === true) return
      recorder?.failed(ending(exchange, failure.status), failure)
      // A client just dealt its split bucket keeps it, whatever this answer was.
      const cookies = exchange.routingCookies(false)
      if (cookies !== null) exchange.reply.header('set-cookie', cookies)
      answer(exchange.request, exchange.reply, failure)
    },
    broken (exchange, failure) {
      const { request, reply } = exchange
      recorder?.failed(ending(exchange, failure.status), failure)
      logFailure(request, failure, true)
      // Fastify logs the cut it is about to see ("stream closed prematurely", at info) through
      // reply.log. The record above already tells it: from here on, only errors get through.
      reply.log = reply.log.child({}, { level: 'error' })
      if (isGrpc(request.headers['content-type']) && request.raw.httpVersionMajor >= 2 && exchange.endAnswerWith(grpcTrailers(failure, isFullExposure(config.errors, request)))) return
      cutAnswer(reply)
    },
    aborted (exchange, phase) {
      recorder?.aborted(exchange.pool.name, exchange.target?.hostPort ?? null)
      logClientAborted(exchange.request, phase, exchange.pool.name, exchange.target?.hostPort ?? null, exchange.ms)
    },
    recovered (exchange, status) {
      recorder?.completed(ending(exchange, status))
      logRecovered(exchange.request, exchange.pool.name, status, exchange.attempts, exchange.ms)
    },
    completed (exchange, status) {
      recorder?.completed(ending(exchange, status))
    },
    intercepted (exchange, status, headers) {
      // As nginx's proxy_intercept_errors: the status stays, the body becomes the gateway's.
      const failure = exchange.statusFailure(status, headers)
      recorder?.failed(ending(exchange, failure.status), failure)
      answer(exchange.request, exchange.reply, failure)
    }
  }

  // A delivered response's Proxy-Status member depends on its status alone (exposure only
  // shapes a failure's details): made once per status, not per response.
  const receivedMembers = new Map<number, string>()
  const receivedMember = (status: number): string => {
    let member = receivedMembers.get(status)
    if (member === undefined) {
      member = proxyStatusMember(null, settings.proxyName, false, status)
      receivedMembers.set(status, member)
    }
    return member
  }

  const relayRoute: RelayRoute = {
    via: `1.1 ${settings.proxyName}`,
    intercepts: (status) => config.errors.intercept.has(status),
    proxyStatus: receivedMember,
    rewriteLocations: route.rewriteLocation ? (headers, request, served) => { rewriteLocations(headers, request, route, served) } : null,
    rewriteHeaders: route.rewriteResponseHeaders
  }

  const cache = route.cache === null || caches === null
    ? null
    : caches.create(route, {
      app,
      route: route.prefix,
      proxyName: settings.proxyName,
      via: relayRoute.via,
      prepare: (headers, request) => { relayRoute.rewriteLocations?.(headers, request, router.pool) },
      proxyStatus: (request, failure) => proxyStatusMember(failure, settings.proxyName, isFullExposure(config.errors, request), failure.receivedStatus),
      staleServed (request, failure, exchange, cacheStatus, status) {
        if (exchange !== null) recorder?.failed({ ...ending(exchange, status), cache: cacheStatus }, failure)
        logServedStale(request, failure, status)
      }
    })

  const paths = new PathMapper(route.prefix, route.rewritePrefix, routerMatching(app))

  /** The client's own fault, found before any exchange: answered with the classifier's status. */
  function refuse (request: FastifyRequest, reply: FastifyReply, code: string, why: string): void {
    const { error, status, detail } = classifyClientFault(code)
    closeConnectionAfter(reply)
    answer(request, reply, makeFailure(error, { phase: 'route', pool: pool.name, status, ms: reply.elapsedTime, cause: code, detail, why }))
  }

  /** The path the upstream gets; null when it is refused (answered 400 here, before any exchange). */
  function upstreamPath (request: FastifyRequest, reply: FastifyReply): string | null {
    try {
      return paths.map(request.url)
    } catch (err) {
      if (!(err instanceof UnsafePathError)) throw err
      refuse(request, reply, err.code, `${ensureSentence(err.message)} The gateway refuses a path an upstream could resolve outside the route's rewritePrefix ("${route.rewritePrefix === '' ? '/' : route.rewritePrefix}"); the client should send it without dot segments or escapes that make one.`)
      return null
    }
  }

  function proxyRequest (request: FastifyRequest, reply: FastifyReply): void {
    if (viaContains(request.headers.via, settings.via)) {
      const failure = makeFailure('proxy_loop_detected', { phase: 'route', pool: pool.name, ms: reply.elapsedTime })
      answer(request, reply, failure)
      return
    }
    const path = upstreamPath(request, reply)
    if (path === null) return
    const upstream = requestHeaders(request, reply)
    if (upstream === null) return
    const routed = router.choose(request)
    if (chooses) {
      // The record Fastify writes when the answer is sent names the pool that served it.
      reply.log = reply.log.child({ pool: routed.pool.name })
      recorder?.routed(route.prefix, routed.pool.name, routed.by)
    }
    if (isGrpc(request.headers['content-type']) && routed.pool.config.protocol === 'http1') {
      answer(request, reply, grpcOverHttp1(routed.pool.name, reply.elapsedTime))
      return
    }
    // A handshake on a websocket route opens a tunnel; anything else is plain HTTP.
    if (websockets !== null && route.websocket && isWebSocketHandshake(request)) {
      websockets.open(request, reply, path, upstream, routed, { route: routed.route, pool: routed.pool, config, answer, recorder })
      return
    }
    // An upgrade request that is not a handshake for this route: its body is on the socket.
    const kept = websockets !== null ? bodyAfterUpgrade(request.raw) : undefined
    if (kept === 'length-required') {
      refuse(request, reply, GATEWAY_CODES.lengthRequired, 'The request asked to upgrade the connection (Upgrade) and sent a chunked body; the gateway goes on in plain HTTP and needs the body\'s length for that. The client should send Content-Length, or no Upgrade.')
      return
    }
    const body = kept ?? request.body as IncomingMessage | undefined
    if (cache === null) {
      exchange(request, reply, path, upstream, routed, body, null, null)
      return
    }
    // Looked up before any target is picked: a hit costs the pool nothing. The key has the
    // pool routing chose, so a canary's answers never stand in for the stable pool's.
    cache.handle(request, reply, keyPool(routed.pool.name), (hook, validators) => { exchange(request, reply, path, upstream, routed, body, hook, validators) })
  }

  /** Sends the request upstream; `validators`: the conditional fields that revalidate a stored answer. */
  function exchange (request: FastifyRequest, reply: FastifyReply, path: string, upstream: RewrittenRequest, routed: Routed, body: Readable | undefined, hook: ExchangeCache | null, validators: Record<string, string> | null): void {
    const headers = validators === null ? upstream.headers : { ...upstream.headers, ...validators }
    const exchange = new Exchange(request, reply, routed.route, routed.pool, events, relayRoute, tracing)
    exchange.routed = routed
    exchange.pinnedHost = upstream.host
    exchange.cache = hook
    if (mirror !== null && mirror.take(request)) {
      exchange.onBodyReady = (prepared) => { mirror.send(request, path, upstream.headers, prepared) }
    }
    exchange.start(path, headers as Record<string, string>, body)
  }

  /**
   * The headers every try sends: the gateway's forwarding rules, then the route's rewriter.
   * Null when the rewriter failed (answered here, before any try: nothing went upstream).
   */
  function requestHeaders (request: FastifyRequest, reply: FastifyReply): RewrittenRequest | null {
    const headers = forwardRequestHeaders(request, request.headers, settings) as Record<string, string | string[]>
    const rewrite = route.rewriteRequestHeaders
    if (rewrite === null) return { headers, host: null }
    try {
      return rewriteRequest(rewrite, request, headers)
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err
      answer(request, reply, makeFailure('proxy_internal_error', { phase: 'route', pool: pool.name, ms: reply.elapsedTime, cause: err.code, why: err.message }))
      return null
    }
  }

  /**
   * Fastify's errors on the route. One that comes while an exchange relays into the reply is
   * the relay's (Node refused a header as Fastify wrote it, an app's onSend hook threw): the
   * exchange ends with it, as with any throw in relay work, so it is logged once.
   */
  function onRouteError (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
    const exchange = exchangeOf(reply.raw)
    if (exchange === undefined) {
      errorHandler(error, request, reply)
      return
    }
    exchange.relayFailed(error, !reply.raw.headersSent)
  }

  // Each route lives in a scope of its own, so Fastify's errors on it (and a method it does
  // not serve) are answered in the gateway's format without touching the rest of the app.
  await app.register(async function proxiedRoute (scope) {
    scope.setErrorHandler(onRouteError)
    scope.setNotFoundHandler(notFoundHandler)
    // Bodies reach the upstream byte for byte, whatever their type: Fastify hands the raw
    // request stream over instead of parsing it (or applying its bodyLimit; routes[].bodyLimit
    // is the gateway's own).
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', passBodyThrough)
    // The route's own Fastify options (hooks, config, constraints) go to both routes as given;
    // the gateway's keys in config sit beside the app's (validate.ts refuses a clash).
    const { config: appConfig, ...fastifyOptions } = route.fastify
    const routeConfig = { ...appConfig, upstream: { pool: route.pool, prefix: route.prefix }, ...(route.rateLimit !== null ? { rateLimit: route.rateLimit } : {}) }
    for (const url of ['/', '/*']) scope.route({ ...fastifyOptions, method: route.methods, url, handler: proxyRequest, config: routeConfig })
    // Fastify puts the app's own prefix before it (index.ts made route.prefix the full one).
  }, { prefix: route.prefix.slice(app.prefix.length) })
}

function passBodyThrough (_request: FastifyRequest, body: IncomingMessage, done: (err: null, body: IncomingMessage) => void): void {
  done(null, body)
}

/** How the app's router compares paths: a prefix sent escaped or in other case still maps. */
function routerMatching (app: FastifyInstance): RouterMatching {
  const initial = app.initialConfig as { caseSensitive?: boolean, ignoreDuplicateSlashes?: boolean, routerOptions?: { caseSensitive?: boolean, ignoreDuplicateSlashes?: boolean } }
  return {
    caseSensitive: initial.routerOptions?.caseSensitive ?? initial.caseSensitive ?? true,
    ignoreDuplicateSlashes: initial.routerOptions?.ignoreDuplicateSlashes ?? initial.ignoreDuplicateSlashes ?? false
  }
}
