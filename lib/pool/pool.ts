// A pool: its targets, the balancer that orders them, and what may take traffic right now.
import type { FastifyRequest } from 'fastify'
import type { PoolConfig } from '../options/config.js'
import { Target, type TargetSnapshot } from './target.js'
import { createBalancer, type Balancer } from './balancer/index.js'

export interface PoolSnapshot {
  name: string
  balancer: string
  targets: TargetSnapshot[]
}

export class UpstreamPool {
  readonly name: string
  readonly config: PoolConfig
  readonly targets: Target[]
  readonly #balancer: Balancer

  constructor (config: PoolConfig) {
    this.name = config.name
    this.config = config
    this.targets = config.targets.map((t) => new Target(t, config))
    this.#balancer = createBalancer(config.balancer)
  }

  /** Targets for this request, best first. Backups only when no primary can take traffic. */
  candidates (request: FastifyRequest): Target[] {
    const primaries = this.targets.filter((t) => !t.backup)
    if (primaries.length > 0) return this.#balancer.order(primaries, request)
    const backups = this.targets.filter((t) => t.backup)
    return backups.length > 0 ? this.#balancer.order(backups, request) : []
  }

  target (url: string): Target | undefined {
    return this.targets.find((t) => t.url === url)
  }

  snapshot (): PoolSnapshot {
    const balancer = this.config.balancer
    return {
      name: this.name,
      balancer: balancer.kind === 'hash' ? `hash(${balancer.key})` : balancer.kind,
      targets: this.targets.map((t) => t.snapshot())
    }
  }

  async close (): Promise<void> {
    await Promise.all(this.targets.map(async (t) => await t.close()))
  }
}
