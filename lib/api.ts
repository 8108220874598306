// `app.upstream`: read (and, as features land, steer) pools at run time.
import type { UpstreamPool, PoolSnapshot } from './pool/pool.js'
import type { TargetSnapshot } from './pool/target.js'
import { probe, type ProbeResult } from './observe/probe.js'
import type { Caches } from './cache/caches.js'
import { unknownCachingRoute, unknownPool } from './errors/codes.js'

export interface UpstreamPoolApi {
  readonly name: string
  /** Every target with its state and counters, as of now. */
  targets: () => TargetSnapshot[]
}

export interface UpstreamApi {
  /** Every pool with its targets, as of now. */
  pools: () => PoolSnapshot[]
  /** One pool; throws for a name that is not configured. */
  pool: (name: string) => UpstreamPoolApi
  /** Stops new requests to a target; those in flight finish. Throws for an unknown pool or target. */
  drain: (pool: string, url: string) => void
  /** Puts a drained (or ejected) target back into rotation. */
  enable: (pool: string, url: string) => void
  /**
   * One GET (the pool's health.path, or `/`) to that target outside the balancer, each phase
   * timed; resolves with the status or the classified error. Throws for an unknown pool or target.
   */
  probe: (pool: string, url: string) => Promise<ProbeResult>
  /**
   * Drops the stored answers of a caching route (named by its prefix), or of one path of it
   * (as the client requests it; without a query string, every query string of that path goes
   * too). Resolves with how many keys went. Throws for a route that does not cache.
   */
  purge: (route: string, path?: string) => Promise<number>
}

export function createApi (pools: ReadonlyMap<string, UpstreamPool>, caches: readonly Caches[] = []): UpstreamApi {
  const find = (name: string): UpstreamPool => {
    const pool = pools.get(name)
    if (pool === undefined) throw unknownPool(name, [...pools.keys()])
    return pool
  }
  return {
    pools: () => [...pools.values()].map((p) => p.snapshot()),
    pool: (name) => {
      const pool = find(name)
      return { name, targets: () => pool.snapshot().targets }
    },
    drain: (name, url) => { find(name).drain(url) },
    enable: (name, url) => { find(name).enable(url) },
    probe: async (name, url) => await probe(find(name), url),
    purge: async (route, path) => {
      const owner = caches.find((c) => c.has(route))
      if (owner === undefined) throw unknownCachingRoute(route, caches.flatMap((c) => c.routes()))
      return await owner.purge(route, path)
    }
  }
}
