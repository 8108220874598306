// fastify-upstream: a Fastify plugin that proxies routes to pools of upstream targets.
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { validateOptions } from './options/validate.js'
import type { UpstreamOptions } from './options/types.js'
import { UpstreamPool } from './pool/pool.js'
import { registerRoute } from './proxy/routes.js'
import { RouteRouter } from './routing/router.js'
import { Affinity } from './routing/sticky.js'
import { Mirror } from './proxy/mirror.js'
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
import { makeHttpProxy } from './http-proxy.js'
import { checkJoin, earlierRegistrations, firstRegistration, join } from './registrations.js'
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
  const config = underAppPrefix(validateOptions(options), app.prefix)
  // Registered again in the same app, it joins the first registration's app.upstream, status
  // page and metrics (registrations.ts).
  const earlier = earlierRegistrations(app)
  if (earlier !== null) checkJoin(earlier, config, options)
  const pools = new Map([...config.pools].map(([name, poolConfig]) => [name, new UpstreamPool(poolConfig, app.log)]))
  for (const [name, pool] of config.pools) {
    // Said once, at start: verification off is sometimes meant (a lab), never to go unnoticed.
    if (!pool.tls.rejectUnauthorized) app.log.warn({ pool: name }, `pools.${name}.tls.rejectUnauthorized is false: the certificates of its https targets are not verified`)
  }
  // One affinity cookie per sticky pool, whichever route sends it traffic.
  const affinities = new Map([...config.pools.values()].flatMap((pool) => pool.sticky === null ? [] : [[pool.name, new Affinity(pool, pool.sticky, config.errors.proxyName)] as const]))
  const appErrors = createErrorHandlers(config, null)
  const tracing = tracingFor(config, pools)

  // Each registration's caching routes have their stores; app.upstream.purge, the status
  // page and the metrics read every registration's.
  const caches = config.routes.some((route) => route.cache !== null) ? new Caches(app.log) : null
  // Finished requests are counted only where something reads the counts.
  const first = earlier === null
  const registrations = earlier ?? firstRegistration(app)
  join(registrations, pools, config.routes)
  if (caches !== null) registrations.caches.push(caches)
  const metrics = first && config.metrics !== null ? new Metrics(registrations.pools, config.metrics.registry) : null
  const stories = first && config.status?.store != null ? new StoryStore(config.status.store, config.status.keep, app.log) : null
  if (first) {
    registrations.metrics = metrics
    app.decorate('upstream', createApi(registrations.pools, registrations.caches))
    if (config.status !== null || metrics !== null) registrations.recorder = new Recorder(config.status?.keep ?? 0, metrics, config.status !== null, stories, diagnosisMarks(config))
  }
  const recorder = registrations.recorder
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
  // One 'upgrade' listener serves every registration's routes (two would each leave the other's
  // paths unanswered): made by the first with a websocket route, joined by the rest.
  const madeWebsockets = registrations.websockets === null && registrations.routes.some((route) => route.websocket)
  if (madeWebsockets) registrations.websockets = new WebSockets(app, registrations.routes)
  else registrations.websockets?.addRoutes(config.routes)
  const websockets = registrations.websockets
  // Each mirroring route's copies, by prefix (its counts on the status page and in the metrics).
  const mirrors = new Map(config.routes.flatMap((route) => route.mirror === null
    ? []
    : [[route.prefix, new Mirror(route.mirror, pools.get(route.mirror.pool)!, config.errors.proxyName, (outcome) => { recorder?.mirrored(route.prefix, route.mirror!.pool, outcome) })] as const]))
  for (const [prefix, mirror] of mirrors) registrations.mirrors.set(prefix, mirror)
  app.addHook('preClose', async function markClosingAndEndTunnels () {
    closing = true
    if (madeWebsockets) websockets?.close()
    // Copies in flight are dropped: a slow mirror service must not hold the app open.
    for (const mirror of mirrors.values()) mirror.close()
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
  // The status page reads every registration's pools, routes and mirrors, as they join.
  if (first && config.status !== null) registerStatus(app, { ...config, routes: registrations.routes }, config.status, registrations.pools, recorder!, limiter?.health ?? null, stories, (prefix) => registrations.mirrors.get(prefix)?.inFlight ?? 0, registrations.caches)
  if (metrics !== null) {
    // Only a shared store (rateLimit.redis) can fail; the in-memory one has nothing to tell.
    if (limiter?.health != null) metrics.watchRateLimitStore(limiter.health)
    if (stories !== null) metrics.watchStoryStore(stories)
    metrics.watchCaches(registrations.caches)
    registerMetrics(app, config.metrics!.path, metrics)
  }
  // Routes that choose their pool or mirror are counted from the first registration that has one.
  if (registrations.metrics !== null && !registrations.watchingRoutes && config.routes.some((route) => route.match.length > 0 || route.split.length > 0 || route.mirror !== null)) {
    registrations.metrics.watchRoutes(recorder!.routes)
    registrations.watchingRoutes = true
  }

  // The proxied routes share one scope, so a global rate limit applies to them and not to the
  // app's own routes.
  await app.register(async function proxiedRoutes (gateway) {
    if (limiter !== null) await gateway.register(rateLimit, limiter.pluginOptions())
    for (const route of config.routes) {
      const router = new RouteRouter(route, pools, affinities, config.errors.proxyName)
      await registerRoute(gateway, config, route, router, mirrors.get(route.prefix) ?? null, websockets, recorder, tracing, caches)
    }
  })
}

/**
 * Registered in a context with a prefix (`app.register(plugin, { prefix: '/v1' })`), as
 * @fastify/http-proxy may be, a route's paths are under it: the path mapping, Location
 * rewriting and the upgrade listener all read the full prefix.
 */
function underAppPrefix (config: Config, appPrefix: string): Config {
  if (appPrefix === '') return config
  return { ...config, routes: config.routes.map((route) => ({ ...route, prefix: appPrefix + route.prefix })) }
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
/** A plugin that takes @fastify/http-proxy's options: one upstream, one prefix (docs/migrating.md). */
export const httpProxy = makeHttpProxy(plugin)
export type { HttpProxyOptions, HttpProxyReplyOptions } from './http-proxy.js'
