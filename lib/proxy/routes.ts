// Each `routes[]` entry becomes a @fastify/http-proxy registration (so it is a real Fastify
// route: it shows in printRoutes() and runs hooks). Target choice happens in our dispatcher.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import type { IncomingHttpHeaders } from 'node:http'
import type { Config, RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import { UpstreamDispatcher } from './dispatcher.js'
import { Exchange, kExchange, type ExchangeEvents } from './exchange.js'
import { forwardRequestHeaders, forwardResponseHeaders, viaContains, viaPseudonym, appendList } from './forwarding.js'
import { logFailure, logClientAborted } from '../errors/log.js'
import { createErrorHandlers } from '../errors/handlers.js'
import { retryAfterOf } from '../errors/respond.js'
import { makeFailure } from '../errors/failure.js'
import { isFullExposure, proxyStatusMember } from '../errors/problem.js'

/**
 * A request's exchange rides on the request itself, not in a WeakMap: a WeakMap entry lives
 * until a full GC once its key has been promoted, and under load that kept every finished
 * exchange alive through many young-generation collections, each costlier than the last.
 */
type RequestWithExchange = FastifyRequest & { [kExchange]?: Exchange | null }

/** reply-from needs a syntactically valid base; the dispatcher replaces origin and host per try. */
const PLACEHOLDER_ORIGIN = 'http://fastify-upstream.invalid'

export async function registerRoute (app: FastifyInstance, config: Config, route: RouteConfig, pool: UpstreamPool): Promise<void> {
  const settings = { proxyName: config.errors.proxyName, requestIdHeader: config.requestIdHeader, via: viaPseudonym(config, config.errors.proxyName) }
  const { answer, errorHandler, notFoundHandler } = createErrorHandlers(config, pool.name)

  const events: ExchangeEvents = {
    failed: (exchange, failure) => { answer(exchange.request, exchange.reply, failure) },
    broken (exchange, failure) {
      const { request, reply } = exchange
      logFailure(request, failure, 'the response had started, so the client connection was cut')
      // Fastify logs the cut it is about to see ("stream closed prematurely", at info) through
      // reply.log. The record above already tells it: from here on, only errors get through.
      reply.log = reply.log.child({}, { level: 'error' })
      reply.raw.destroy()
    },
    aborted (exchange, phase) {
      logClientAborted(exchange.request, phase, pool.name, exchange.target?.hostPort ?? null, exchange.ms)
    }
  }

  function handler (request: FastifyRequest, reply: FastifyReply, dest: string, options: object): FastifyReply {
    if (viaContains(request.headers.via, settings.via)) {
      const failure = makeFailure('proxy_loop_detected', { phase: 'route', pool: pool.name, ms: reply.elapsedTime })
      answer(request, reply, failure)
      return reply
    }
    const exchange = new Exchange(request, reply, route, pool, events)
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
    const headers = forwardRequestHeaders(request, incoming, settings)
    ;(headers as Record<symbol, unknown>)[kExchange] = (request as RequestWithExchange)[kExchange]
    return headers
  }

  function rewriteHeaders (headers: IncomingHttpHeaders): IncomingHttpHeaders {
    return forwardResponseHeaders(headers, settings) as IncomingHttpHeaders
  }

  function onResponse (request: FastifyRequest, reply: FastifyReply, res: { statusCode: number, stream: NodeJS.ReadableStream & { destroy: () => void, on: (event: 'error', listener: () => void) => unknown } }): void {
    if (config.errors.intercept.has(res.statusCode)) {
      // As nginx's proxy_intercept_errors: the status stays, the body becomes the gateway's.
      // The exchange ends here, so dropping the upstream body is not taken for a client abort.
      const exchange = (request as RequestWithExchange)[kExchange]!
      exchange.end()
      res.stream.on('error', () => {})
      res.stream.destroy()
      answer(request, reply, makeFailure('upstream_error_status', {
        phase: 'headers',
        pool: pool.name,
        target: exchange.target?.hostPort ?? null,
        attempts: exchange.attempts,
        ms: exchange.ms,
        status: res.statusCode,
        receivedStatus: res.statusCode,
        retryAfter: retryAfterOf(reply)
      }))
      return
    }
    const full = isFullExposure(config.errors, request)
    reply.header('proxy-status', appendList(reply.getHeader('proxy-status') as string | undefined, proxyStatusMember(null, settings.proxyName, full, res.statusCode)))
    reply.send(res.stream)
  }

  // WebSocket upgrades are handed to `ws` by http-proxy, not to the dispatcher: the target is
  // chosen before the upgrade, so a pool with none answers 503 instead of accepting the socket.
  // Only websocket routes get this hook: a hook costs every request a step.
  const websocketTargets = new WeakMap<FastifyRequest, string>()
  function preHandler (request: FastifyRequest, reply: FastifyReply, done: () => void): void {
    if (request.headers.upgrade?.toLowerCase() !== 'websocket') return done()
    const target = pool.candidates(request)[0]
    if (target !== undefined) {
      websocketTargets.set(request, target.url)
      return done()
    }
    answer(request, reply, makeFailure('destination_unavailable', Object.assign({ pool: pool.name, ms: reply.elapsedTime }, pool.outage())))
  }

  function getUpstream (request: FastifyRequest): string {
    return websocketTargets.get(request) ?? PLACEHOLDER_ORIGIN
  }

  const proxyOptions = {
    upstream: '',
    rewritePrefix: route.rewritePrefix,
    httpMethods: route.methods,
    websocket: route.websocket,
    undici: new UpstreamDispatcher() as unknown as { request: never },
    disableRequestLogging: true,
    config: { upstream: { pool: route.pool, prefix: route.prefix }, ...(route.rateLimit !== null ? { rateLimit: route.rateLimit } : {}) },
    handler,
    ...(route.websocket ? { preHandler } : {}),
    replyOptions: {
      getUpstream,
      rewriteRequestHeaders,
      rewriteHeaders,
      onResponse: onResponse as never,
      // Retries are the exchange's business; reply-from's own would retry 503s on its own.
      retryDelay: () => null
    },
    wsClientOptions: {
      rewriteRequestHeaders: (headers: IncomingHttpHeaders, request: FastifyRequest) => {
        const forwarded = forwardRequestHeaders(request, headers, settings)
        if (request.headers.cookie !== undefined) forwarded.cookie = request.headers.cookie
        return forwarded
      }
    }
  }

  // Each route lives in a scope of its own, so Fastify's errors on it (and a method it does
  // not serve) are answered in the gateway's format without touching the rest of the app.
  await app.register(async (scope) => {
    // Declared up front so every request object keeps one shape.
    scope.decorateRequest(kExchange, null)
    scope.setErrorHandler(errorHandler)
    scope.setNotFoundHandler(notFoundHandler)
    await scope.register(httpProxy, proxyOptions as never)
  }, { prefix: route.prefix })
}
