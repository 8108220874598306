// `app.upstream`: read (and, as features land, steer) pools at run time.
import type { UpstreamPool, PoolSnapshot } from './pool/pool.js'
import type { TargetSnapshot } from './pool/target.js'
import { probe, type ProbeResult } from './observe/probe.js'
import { unknownPool } from './errors/codes.js'

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
}

export function createApi (pools: ReadonlyMap<string, UpstreamPool>): UpstreamApi {
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
    probe: async (name, url) => await probe(find(name), url)
  }
}
