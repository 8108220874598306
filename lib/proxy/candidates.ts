// The targets one request may try, in the balancer's order, shared by an HTTP exchange and a
// WebSocket tunnel so both make the same choices: the next candidate after the last one tried
// (a retry goes elsewhere whenever it can), never one that could not be connected to in this
// request, and only targets that may take traffic (or any, in panic) and have room.
import type { FastifyRequest } from 'fastify'
import type { UpstreamPool } from '../pool/pool.js'
import type { Target } from '../pool/target.js'
import type { Affinity } from '../routing/sticky.js'

export class Candidates {
  readonly #list: Target[]
  /** Targets that refused or could not be reached in this request (made on the first). */
  #unreachable: Set<Target> | null = null
  /** This request made the pool's half-open trial: it gets one try. */
  #trialMade = false
  #next = 0

  /** The ejected target the pool gave this request as its half-open trial, if it did. */
  readonly #trial: Target | null

  constructor (private readonly pool: UpstreamPool, request: FastifyRequest, affinity: Affinity | null = null) {
    // A sticky pool puts the client's own target first while it may take traffic.
    this.#list = affinity === null ? pool.candidates(request) : affinity.first(pool.candidates(request), request)
    // Only the request the pool handed the trial to may make it: another that listed the same
    // target before its ejection must not ride along.
    const only = this.#list.length === 1 ? this.#list[0]! : null
    this.#trial = only !== null && pool.isTrial(only) ? only : null
  }

  /** No target of the pool may take traffic (the request gets destination_unavailable). */
  get empty (): boolean {
    return this.#list.length === 0
  }

  /**
   * The next target to try: one with room; 'full' when those that may take traffic are all at
   * limits.maxConcurrent (wait in line); 'none' when none may. A target that went out since
   * the list was made is skipped.
   */
  pick (): Target | 'none' | 'full' {
    let sawAvailable = false
    const count = this.#list.length
    for (let i = 0; i < count; i++) {
      const target = this.#list[(this.#next + i) % count]!
      if (!this.#mayTry(target)) continue
      sawAvailable = true
      if (this.pool.hasRoom(target)) {
        this.#next = (this.#next + i + 1) % count
        if (target === this.#trial) this.#trialMade = true
        return target
      }
    }
    return sawAvailable ? 'full' : 'none'
  }

  /** A target that could not even be connected to is not tried again in this request. */
  unreachable (target: Target): void {
    (this.#unreachable ??= new Set()).add(target)
  }

  /** Some candidate may still take a try. */
  hasAnother (): boolean {
    return this.#list.some((t) => this.#mayTry(t))
  }

  #mayTry (target: Target): boolean {
    // A target that left its name's DNS answer since the list was made may be closed already.
    return this.#unreachable?.has(target) !== true && !target.removed && (target.isAvailable() || this.pool.inPanic || this.#mayTrial(target))
  }

  /** The pool's half-open trial gets one try: a failed one is no reason to knock again at once. */
  #mayTrial (target: Target): boolean {
    return target === this.#trial && !this.#trialMade && this.pool.isTrial(target)
  }
}
