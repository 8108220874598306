// Which pool serves a request of a route: the first `match` rule that fits, else the `split`
// share the client was dealt, else the route's pool. The decision (`Routed`) rides on the
// request's exchange or tunnel (TrySequence.routed): the answer's cookies, the log record, the
// request story, the metrics and anything else that needs the pool read it there.
import type { FastifyRequest } from 'fastify'
import type { RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import type { Affinity } from './sticky.js'
import { matchPool } from './match.js'
import { BucketDealer, decodeBucket, encodeBucket, poolForBucket } from './split.js'
import { cookieOf, gatewayCookie } from './cookies.js'

/** How the pool was chosen. */
export type RoutedBy = 'route' | 'match' | 'split'

export interface Routed {
  readonly pool: UpstreamPool
  /** The route as it serves that pool (its timeouts and retry). */
  readonly route: RouteConfig
  readonly by: RoutedBy
  /** The pool's affinity cookie, when it is sticky. */
  readonly affinity: Affinity | null
  /** Set-Cookie for a client just dealt its split bucket; null when it had one. */
  readonly splitCookie: string | null
}

/** A split bucket is kept this long, in seconds (30 days): long enough for a canary's life. */
const SPLIT_MAX_AGE = 30 * 24 * 3600

/** One dealer for every route: a client's bucket is the same whichever split route deals it. */
const dealer = new BucketDealer()

export class RouteRouter {
  readonly #plain: Routed
  readonly #routes = new Map<string, { pool: UpstreamPool, route: RouteConfig }>()
  readonly #splitCookie: string

  constructor (readonly route: RouteConfig, pools: ReadonlyMap<string, UpstreamPool>, private readonly affinities: ReadonlyMap<string, Affinity>, proxyName: string) {
    this.#splitCookie = `${proxyName}-split`
    this.#routes.set(route.pool, { pool: pools.get(route.pool)!, route })
    for (const [name, variant] of route.variants) this.#routes.set(name, { pool: pools.get(name)!, route: variant })
    // The common case, a route with no choice to make, allocates nothing per request.
    this.#plain = this.#routed(route.pool, 'route', null)
  }

  /** The route's own pool. */
  get pool (): UpstreamPool {
    return this.#plain.pool
  }

  /** The pools this route may send a request to, its own first. */
  get pools (): UpstreamPool[] {
    return [...this.#routes.values()].map((r) => r.pool)
  }

  choose (request: FastifyRequest): Routed {
    const route = this.route
    if (route.match.length > 0) {
      const matched = matchPool(route.match, request)
      if (matched !== null) return this.#routed(matched, 'match', null)
    }
    if (route.split.length === 0) return this.#plain
    const kept = decodeBucket(cookieOf(request, this.#splitCookie))
    const bucket = kept ?? dealer.deal()
    const cookie = kept !== null ? null : gatewayCookie(request, this.#splitCookie, encodeBucket(bucket), SPLIT_MAX_AGE)
    return this.#routed(poolForBucket(route.split, bucket, route.pool), 'split', cookie)
  }

  #routed (name: string, by: RoutedBy, splitCookie: string | null): Routed {
    const { pool, route } = this.#routes.get(name)!
    return { pool, route, by, affinity: this.affinities.get(name) ?? null, splitCookie }
  }
}
