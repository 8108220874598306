// The plugin registered more than once in one app (one `httpProxy` per prefix, as
// @fastify/http-proxy users do, or several `fastify-upstream` registrations): the registrations
// share what the app can have only one of — `app.upstream`, the status page, the metrics route,
// the WebSocket 'upgrade' listener — and each keeps its own pools, routes and error settings.
// The first registration decides the status page and metrics; later ones join them.
import type { FastifyInstance } from 'fastify'
import type { Config, RouteConfig } from './options/config.js'
import { OptionsError } from './options/check.js'
import type { UpstreamPool } from './pool/pool.js'
import type { Recorder } from './observe/recorder.js'
import type { WebSockets } from './proxy/websocket.js'
import type { Metrics } from './observe/metrics.js'
import type { Mirror } from './proxy/mirror.js'
import type { Caches } from './cache/caches.js'

export interface Registrations {
  /** Every registration's pools, by name: what `app.upstream`, the status page and metrics read. */
  readonly pools: Map<string, UpstreamPool>
  /** Every registration's routes, in order. */
  readonly routes: RouteConfig[]
  /** The first registration's recorder (null: it has neither status page nor metrics). */
  recorder: Recorder | null
  /** The one 'upgrade' listener, made by the first registration with a websocket route. */
  websockets: WebSockets | null
  /** The first registration's metrics (null: it has none). */
  metrics: Metrics | null
  /** Whether the metrics count routes that choose their pool (once, whichever registration has one). */
  watchingRoutes: boolean
  /** Every registration's mirroring routes, by prefix (copies in flight, on the status page). */
  readonly mirrors: Map<string, Mirror>
  /** Every registration's route caches (each registration opens and closes its own). */
  readonly caches: Caches[]
}

// Keyed by the HTTP server: registrations in different encapsulated contexts share it.
const byServer = new WeakMap<object, Registrations>()

/** The registrations already made in this app, or null for the first. */
export function earlierRegistrations (app: FastifyInstance): Registrations | null {
  return byServer.get(app.server) ?? null
}

export function firstRegistration (app: FastifyInstance): Registrations {
  const registrations: Registrations = { pools: new Map(), routes: [], recorder: null, websockets: null, metrics: null, watchingRoutes: false, mirrors: new Map(), caches: [] }
  byServer.set(app.server, registrations)
  // Its pools are closed with the app: nothing may join them after.
  app.addHook('onClose', async function forgetRegistrations () { byServer.delete(app.server) })
  return registrations
}

/**
 * A later registration may not reuse a pool name or a route prefix, nor set what the first
 * one decides (`options` as given, before defaults: a default is no choice).
 */
export function checkJoin (registrations: Registrations, config: Config, options: { status?: unknown, metrics?: unknown }): void {
  config.routes.forEach((route, i) => {
    if (registrations.routes.some((r) => r.prefix === route.prefix)) throw new OptionsError(`routes[${i}].prefix`, `"${route.prefix}" is already used by an earlier registration of fastify-upstream in this app`)
  })
  for (const name of config.pools.keys()) {
    if (registrations.pools.has(name)) throw new OptionsError(`pools.${name}`, 'already defined by an earlier registration of fastify-upstream in this app: pool names are shared (app.upstream, status page, metrics); choose another name')
  }
  for (const key of ['status', 'metrics'] as const) {
    if (options[key] !== undefined) throw new OptionsError(key, `set it on the first registration of fastify-upstream in this app: later registrations join its status page and metrics (${key} is decided once per app)`)
  }
}

export function join (registrations: Registrations, pools: ReadonlyMap<string, UpstreamPool>, routes: readonly RouteConfig[]): void {
  for (const [name, pool] of pools) registrations.pools.set(name, pool)
  registrations.routes.push(...routes)
}
