// Each `routes[]` entry becomes a @fastify/http-proxy registration (so it is a real Fastify
// route: it shows in printRoutes() and runs hooks). Target choice happens in our dispatcher.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { Config, RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import { UpstreamDispatcher } from './dispatcher.js'
import { Exchange, kExchange, type ExchangeEvents } from './exchange.js'
import { rewriteLocations } from './location.js'
import { forwardRequestHeaders, forwardResponseHeaders, viaContains, viaPseudonym, appendList } from './forwarding.js'
import { logFailure, logClientAborted, logRecovered } from '../errors/log.js'
import { createErrorHandlers } from '../errors/handlers.js'
import { retryAfterOf } from '../errors/respond.js'
import { makeFailure } from '../errors/failure.js'
import { proxyStatusMember } from '../errors/problem.js'
import { isWebSocketHandshake, type WebSockets } from './websocket.js'
import type { Ending, Recorder } from '../observe/recorder.js'
import type { Tracing } from '../observe/tracing.js'

/**
 * A request's exchange rides on the request itself, not in a WeakMap: a WeakMap entry lives
 * until a full GC once its key has been promoted, and under load that kept every finished
 * exchange alive through many young-generation collections, each costlier than the last.
 */
type RequestWithExchange = FastifyRequest & { [kExchange]?: Exchange | null }

/**
 * Response headers reach the client as soon as the upstream's do, before any body byte: an
 * EventSource or a long-poll client waits on them. Fastify writes a streamed reply's headers
 * with its first body chunk; when no chunk follows in the same turn of the event loop, they go
 * out on their own. A body already there still leaves in one write with its headers.
 */
function flushHeadersUnlessBodyFollows (res: ServerResponse): void {
  // 'pipe': Fastify has set the reply's headers on `res` and starts streaming the body.
  res.once('pipe', onPipe)
}

/**
 * The responses that started streaming in this turn of the event loop. One setImmediate looks
 * at all of them: under load many responses start in one turn, and each needs no timer and no
 * closure of its own.
 */
let streaming: ServerResponse[] = []

function onPipe (this: ServerResponse): void {
  if (streaming.length === 0) setImmediate(flushStarted)
  streaming.push(this)
}

function flushStarted (): void {
  const started = streaming
  streaming = []
  for (let i = 0; i < started.length; i++) {
    const res = started[i]!
    if (!res.headersSent && !res.destroyed) res.flushHeaders()
  }
}

/** reply-from needs a syntactically valid base; the dispatcher replaces origin and host per try. */
const PLACEHOLDER_ORIGIN = 'http://fastify-upstream.invalid'

export async function registerRoute (app: FastifyInstance, config: Config, route: RouteConfig, pool: UpstreamPool, websockets: WebSockets | null = null, recorder: Recorder | null = null, tracing: Tracing | null = null): Promise<void> {
  const settings = { proxyName: config.errors.proxyName, requestIdHeader: config.requestIdHeader, via: viaPseudonym(config, config.errors.proxyName) }
  const { answer, errorHandler, notFoundHandler } = createErrorHandlers(config, pool.name)

  /** What the recorder keeps of an exchange that ended with the client answered `status`. */
  const ending = (exchange: Exchange, status: number): Ending => ({
    id: String(exchange.request.id),
    method: exchange.request.method,
    route: route.prefix,
    pool: pool.name,
    // An address that has left the DNS answer counts in its pool's totals only: its own series
    // are dropped when it leaves (UpstreamPool.onTargetRemoved) and must not be made again.
    target: exchange.target !== null && !exchange.target.removed ? exchange.target.hostPort : null,
    status,
    ms: exchange.ms,
    attempts: exchange.attempts,
    poolState
  })
  const poolState = (): Array<{ target: string, state: string }> => pool.targets.map((t) => ({ target: t.hostPort, state: t.state() }))

  const events: ExchangeEvents = {
    failed (exchange, failure) {
      recorder?.failed(ending(exchange, failure.status), failure)
      answer(exchange.request, exchange.reply, failure)
    },
    broken (exchange, failure) {
      const { request, reply } = exchange
      recorder?.failed(ending(exchange, failure.status), failure)
      logFailure(request, failure, true)
      // Fastify logs the cut it is about to see ("stream closed prematurely", at info) through
      // reply.log. The record above already tells it: from here on, only errors get through.
      reply.log = reply.log.child({}, { level: 'error' })
      reply.raw.destroy()
    },
    aborted (exchange, phase) {
      recorder?.aborted(pool.name, exchange.target?.hostPort ?? null)
      logClientAborted(exchange.request, phase, pool.name, exchange.target?.hostPort ?? null, exchange.ms)
    },
    recovered (exchange, status) {
      recorder?.completed(ending(exchange, status))
      logRecovered(exchange.request, pool.name, status, exchange.attempts, exchange.ms)
    },
    completed (exchange, status) {
      recorder?.completed(ending(exchange, status))
    }
  }

  function handler (request: FastifyRequest, reply: FastifyReply, dest: string, options: object): FastifyReply {
    if (viaContains(request.headers.via, settings.via)) {
      const failure = makeFailure('proxy_loop_detected', { phase: 'route', pool: pool.name, ms: reply.elapsedTime })
      answer(request, reply, failure)
      return reply
    }
    // A handshake on a websocket route opens a tunnel; anything else is plain HTTP.
    if (websockets !== null && route.websocket && isWebSocketHandshake(request)) {
      websockets.open(request, reply, dest, { route, pool, config, answer, recorder })
      return reply
    }
    const exchange = new Exchange(request, reply, route, pool, events, tracing)
    ;(request as RequestWithExchange)[kExchange] = exchange
    try {
      return reply.from(dest, options)
    } catch (err) {
      // reply-from refuses some paths (a `..` segment after `;`) before any try: the exchange
      // never starts, and its total timer must not outlive the 400 the error handler gives.
      exchange.end()
      throw err
    }
  }

  function rewriteRequestHeaders (request: FastifyRequest, incoming: IncomingHttpHeaders): IncomingHttpHeaders {
    // reply-from made `incoming` for this request alone (and stripped Connection already).
    const headers = forwardRequestHeaders(request, incoming, settings, true)
    ;(headers as Record<symbol, unknown>)[kExchange] = (request as RequestWithExchange)[kExchange]
    return headers
  }

  function rewriteHeaders (headers: IncomingHttpHeaders, request: FastifyRequest): IncomingHttpHeaders {
    const forwarded = forwardResponseHeaders(headers, settings) as IncomingHttpHeaders
    rewriteLocations(forwarded, request, route, pool)
    return forwarded
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

  function onResponse (request: FastifyRequest, reply: FastifyReply, res: { statusCode: number, stream: NodeJS.ReadableStream & { destroy: () => void, on: (event: 'error', listener: () => void) => unknown } }): void {
    if (config.errors.intercept.has(res.statusCode)) {
      // As nginx's proxy_intercept_errors: the status stays, the body becomes the gateway's.
      // The exchange ends here, so dropping the upstream body is not taken for a client abort.
      const exchange = (request as RequestWithExchange)[kExchange]!
      exchange.end()
      res.stream.on('error', () => {})
      res.stream.destroy()
      const failure = makeFailure('upstream_error_status', {
        phase: 'headers',
        pool: pool.name,
        target: exchange.target?.hostPort ?? null,
        attempts: exchange.attempts,
        ms: exchange.ms,
        status: res.statusCode,
        receivedStatus: res.statusCode,
        retryAfter: retryAfterOf(reply)
      })
      recorder?.failed(ending(exchange, failure.status), failure)
      answer(request, reply, failure)
      return
    }
    reply.header('proxy-status', appendList(reply.getHeader('proxy-status') as string | undefined, receivedMember(res.statusCode)))
    flushHeadersUnlessBodyFollows(reply.raw)
    reply.send(res.stream)
  }

  const proxyOptions = {
    // A fixed placeholder rather than a getUpstream: with getUpstream, http-proxy copies its
    // reply options and makes a closure on every request.
    upstream: PLACEHOLDER_ORIGIN,
    rewritePrefix: route.rewritePrefix,
    httpMethods: route.methods,
    // The gateway rewrites Location itself (location.ts): http-proxy's own would prefix every
    // relative one and replace rewritePrefix wherever it appears in the value.
    internalRewriteLocationHeader: false,
    undici: new UpstreamDispatcher() as unknown as { request: never },
    disableRequestLogging: true,
    config: { upstream: { pool: route.pool, prefix: route.prefix }, ...(route.rateLimit !== null ? { rateLimit: route.rateLimit } : {}) },
    handler,
    replyOptions: {
      rewriteRequestHeaders,
      rewriteHeaders,
      onResponse: onResponse as never,
      // Retries are the exchange's business; reply-from's own would retry 503s on its own.
      retryDelay: () => null
    }
  }

  // Each route lives in a scope of its own, so Fastify's errors on it (and a method it does
  // not serve) are answered in the gateway's format without touching the rest of the app.
  await app.register(async (scope) => {
    // Declared up front so every request object keeps one shape.
    scope.decorateRequest(kExchange, null)
    scope.setErrorHandler(errorHandler)
    scope.setNotFoundHandler(notFoundHandler)
    // Bodies reach the upstream byte for byte, whatever their type: without this, Fastify's
    // own text/plain parser would decode and re-encode a text body (and apply its bodyLimit).
    // http-proxy then adds the parsers that hand the raw stream on.
    scope.removeAllContentTypeParsers()
    await scope.register(httpProxy, proxyOptions as never)
  }, { prefix: route.prefix })
}
