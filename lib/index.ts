// fastify-upstream: a Fastify plugin that proxies routes to pools of upstream targets.
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { validateOptions } from './options/validate.js'
import type { UpstreamOptions } from './options/types.js'
import { UpstreamPool } from './pool/pool.js'
import { registerRoute } from './proxy/routes.js'
import { Recorder } from './observe/recorder.js'
import { registerMetrics, registerStatus } from './observe/routes.js'
import { Metrics } from './observe/metrics.js'
import { StoryStore } from './observe/story-store.js'
import { answerExpectContinue } from './proxy/continue.js'
import { createErrorHandlers } from './errors/handlers.js'
import { setFrameworkErrorHandler, hasDuplicateHost, rejectDuplicateHost } from './errors/framework.js'
import { kReplacedRequestId, type ReplacedRequestId } from './request-id.js'
import rateLimit from '@fastify/rate-limit'
import { createApi, type UpstreamApi } from './api.js'
import { WebSockets } from './proxy/websocket.js'
import { RateLimiter } from './proxy/rate-limit.js'
import { createTracing, type Tracing } from './observe/tracing.js'
import type { Config } from './options/config.js'
import { OptionsError } from './options/check.js'
import { closeConnectionAfter } from './proxy/forwarding.js'
import { Caches } from './cache/caches.js'

export type * from './options/types.js'
export type { UpstreamApi, UpstreamPoolApi } from './api.js'
export type { PoolSnapshot } from './pool/pool.js'
export type { NameStatus } from './pool/discovery.js'
export type { TargetSnapshot } from './pool/target.js'
export type { Failure, AttemptRecord } from './errors/failure.js'
export type { Problem } from './errors/problem.js'
export type { ProxyErrorType, Blame, Phase } from './errors/taxonomy.js'
export type { ProbeResult } from './observe/probe.js'
export type { StatusReport, PoolReport, TargetReport, Windows } from './observe/report.js'
export type { WindowStats } from './observe/stats.js'
export type { Finding, Severity } from './observe/diagnosis.js'
export type { RequestStory, ErrorExample, TunnelCounts } from './observe/recorder.js'
export type { CacheSnapshot } from './cache/caches.js'
export type { CacheCounts } from './cache/cache.js'
export { OptionsError }
export { frameworkErrors, clientErrorHandler } from './errors/framework.js'
export { requestIdFrom, type RequestIdOptions } from './request-id.js'

declare module 'fastify' {
  interface FastifyInstance {
    upstream: UpstreamApi
  }
}

async function fastifyUpstream (app: FastifyInstance, options: UpstreamOptions): Promise<void> {
  // Validate everything before anything starts: a bad option leaves no timer or socket behind.
  const config = validateOptions(options)
  const pools = new Map([...config.pools].map(([name, poolConfig]) => [name, new UpstreamPool(poolConfig, app.log)]))
  for (const [name, pool] of config.pools) {
    // Said once, at start: verification off is sometimes meant (a lab), never to go unnoticed.
    if (!pool.tls.rejectUnauthorized) app.log.warn({ pool: name }, `pools.${name}.tls.rejectUnauthorized is false: the certificates of its https targets are not verified`)
  }
  const appErrors = createErrorHandlers(config, null)
  const tracing = tracingFor(config, pools)

  const caches = config.routes.some((route) => route.cache !== null) ? new Caches(app.log) : null
  app.decorate('upstream', createApi(pools, caches))
  // Finished requests are counted only where something reads the counts.
  const metrics = config.metrics === null ? null : new Metrics(pools, config.metrics.registry)
  const stories = config.status?.store != null ? new StoryStore(config.status.store, config.status.keep, app.log) : null
  const recorder = config.status !== null || metrics !== null ? new Recorder(config.status?.keep ?? 0, metrics, config.status !== null, stories, diagnosisMarks(config)) : null
  if (recorder !== null) for (const pool of pools.values()) pool.onTargetRemoved((target) => recorder.forget(pool.name, target.hostPort))
  // Callback-style hooks on the request path: an async hook costs a promise and a tick on
  // every request. Each hook is a named function: tracing (@fastify/otel) names its span after it.
  app.addHook('onRequest', function returnRequestIdAndRefuseTwoHosts (request, reply, done) {
    reply.header(config.requestIdHeader, String(request.id))
    // A request with two Hosts is answered here and goes no further (so no done()).
    if (hasDuplicateHost(request.raw.rawHeaders)) return rejectDuplicateHost(request, reply, appErrors)
    const replaced = (request.raw as { [kReplacedRequestId]?: ReplacedRequestId })[kReplacedRequestId]
    if (replaced !== undefined) {
      request.log.info({ requestIdHeader: replaced.header, reason: replaced.reason, length: replaced.length },
        `the client's ${replaced.header} was replaced by a generated id: ${replaced.reason}`)
    }
    done()
  })
  // On shutdown, requests still in flight are answered, then their connections closed: a
  // keep-alive connection left open would hold app.close() for the keep-alive timeout.
  let closing = false
  // Open WebSocket tunnels end too: each would hold the server open as long as it lives.
  const websockets = config.routes.some((route) => route.websocket) ? new WebSockets(app, config.routes) : null
  app.addHook('preClose', async function markClosingAndEndTunnels () {
    closing = true
    websockets?.close()
  })
  app.addHook('onSend', function closeConnectionsWhileShuttingDown (_request, reply, payload, done) {
    if (closing) closeConnectionAfter(reply)
    done(null, payload)
  })
  // The global limiter (and its store); routes with a limit of their own share its store.
  const limiter = config.rateLimit !== null ? new RateLimiter(config.rateLimit, app.log) : null
  app.addHook('onReady', async function startPoolsAndRateLimitStore () {
    // Waits for each target name's first lookup (at most discovery.timeout), not for success.
    await Promise.all([...[...pools.values()].map(async (pool) => await pool.start()), limiter?.start(), stories?.start(), caches?.start()])
  })
  app.addHook('onClose', async function closePoolsAndStores () {
    tracing?.close()
    limiter?.close()
    stories?.close()
    caches?.close()
    await Promise.all([...pools.values()].map(async (pool) => await pool.close()))
  })

  // Unknown paths get the gateway's error format too, unless the app set its own not-found
  // handler before registering the plugin: Fastify allows one per prefix, and the app's wins.
  // Framework and client errors do too, when the app opted in (`Fastify({ frameworkErrors,
  // clientErrorHandler })`).
  setFrameworkErrorHandler(app, appErrors)
  try {
    app.setNotFoundHandler(appErrors.notFoundHandler)
  } catch (err) {
    // Fastify gives this error no code; its message is the only way to tell it apart.
    if (!(err instanceof Error && err.message.startsWith('Not found handler already set'))) throw err
  }

  answerExpectContinue(app, config.routes)
  if (config.status !== null) registerStatus(app, config, config.status, pools, recorder!, limiter?.health ?? null, stories, caches)
  if (metrics !== null) {
    // Only a shared store (rateLimit.redis) can fail; the in-memory one has nothing to tell.
    if (limiter?.health != null) metrics.watchRateLimitStore(limiter.health)
    if (stories !== null) metrics.watchStoryStore(stories)
    if (caches !== null) metrics.watchCaches(caches)
    registerMetrics(app, config.metrics!.path, metrics)
  }

  // The proxied routes share one scope, so a global rate limit applies to them and not to the
  // app's own routes.
  await app.register(async function proxiedRoutes (gateway) {
    if (limiter !== null) await gateway.register(rateLimit, limiter.pluginOptions())
    for (const route of config.routes) {
      await registerRoute(gateway, config, route, pools.get(route.pool)!, websockets, recorder, tracing, caches)
    }
  })
}

/** The latencies the diagnosis counts requests over exactly ("3 of 3 requests took over 2 s"). */
function diagnosisMarks (config: Config): number[] {
  const d = config.status?.diagnosis
  return d === undefined ? [] : [d.avgLatency, d.p99Latency]
}

/** Spans for tries, or null: off, or 'auto' without @opentelemetry/api and a tracer provider. */
function tracingFor (config: Config, pools: ReadonlyMap<string, UpstreamPool>): Tracing | null {
  // Asked per undici request while tracing is on: the origins discovery connects to change.
  const isTarget = (origin: string): boolean => {
    for (const pool of pools.values()) for (const target of pool.targets) if (target.origin === origin) return true
    return false
  }
  try {
    return createTracing(config.tracing, isTarget)
  } catch (err) {
    throw new OptionsError('tracing', (err as Error).message)
  }
}

const plugin = fp(fastifyUpstream, { fastify: '5.x', name: 'fastify-upstream' })
export default plugin
export { plugin as fastifyUpstream }
