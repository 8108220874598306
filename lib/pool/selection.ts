// Which targets may take a request, best first: what health, ejection, drains, backups and
// panic allow, ordered by the pool's balancer.
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { PoolConfig } from '../options/config.js'
import type { Target } from './target.js'
import { createBalancer, type Balancer } from './balancer/index.js'
import type { OutlierDetector } from './outlier.js'

export class Selection {
  readonly #balancer: Balancer
  #inPanic = false

  constructor (
    private readonly config: PoolConfig,
    private readonly outlier: OutlierDetector,
    private readonly log: FastifyBaseLogger
  ) {
    this.#balancer = createBalancer(config.balancer)
  }

  /** Every target is out and `panic` sends traffic to all of them anyway. */
  get inPanic (): boolean {
    return this.#inPanic
  }

  /**
   * Targets for this request, best first. Primaries that may take traffic; known-healthy ones
   * before those no check has judged yet; backups only when no primary can; in panic, every
   * target but drained ones; else the half-open trial, or none (the request gets 503 at once).
   */
  candidates (targets: readonly Target[], request: FastifyRequest): Target[] {
    const now = Date.now()
    // No target at all: a pool whose names have not resolved yet (see outage).
    if (targets.length === 0) return []
    // The common case, every target a healthy primary, needs no filtering.
    if (targets.every((t) => !t.backup && t.health === 'healthy' && t.isAvailable(now))) {
      this.#setPanic(false)
      return this.#balancer.order(targets, request)
    }
    const primaries: Target[] = []
    const backups: Target[] = []
    for (const target of targets) {
      if (target.isAvailable(now)) (target.backup ? backups : primaries).push(target)
    }
    const usable = primaries.length > 0 ? primaries : backups
    if (usable.length > 0) {
      this.#setPanic(false)
      const judged = usable.filter((t) => t.health === 'healthy')
      return this.#balancer.order(judged.length > 0 ? judged : usable, request)
    }
    if (this.config.panic) {
      this.#setPanic(true)
      const all = targets.filter((t) => !t.draining)
      return all.length > 0 ? this.#balancer.order(all, request) : []
    }
    const trial = this.outlier.trial(now)
    return trial === null ? [] : [trial]
  }

  #setPanic (panic: boolean): void {
    if (panic === this.#inPanic) return
    this.#inPanic = panic
    const name = this.config.name
    if (panic) {
      this.log.warn({ pool: name, panic: true }, `${name}: every target is out of rotation; panic is on, so traffic goes to all of them`)
    } else {
      this.log.info({ pool: name, panic: false }, `${name}: targets are available again; panic mode is over`)
    }
  }
}
