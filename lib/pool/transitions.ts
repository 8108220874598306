// Every change of a target's state is logged once, with its reason: the one place that decides
// whether a change is a transition and at which level an operator reads it.
import type { FastifyBaseLogger } from 'fastify'
import type { Target, TargetState } from './target.js'

const OUT_STATES = new Set<TargetState>(['unhealthy', 'ejected', 'draining', 'failing'])

export class Transitions {
  constructor (readonly pool: string, readonly log: FastifyBaseLogger) {}

  /**
   * Applies a change to a target and logs the transition, if its state changed. `from` is for
   * changes the clock already made (an ejection is over the moment its time passes).
   */
  change (target: Target, reason: string, apply: () => void, from = target.state()): void {
    apply()
    const to = target.state()
    if (from === to) return
    target.entered()
    const record = { pool: this.pool, target: target.hostPort, from, to, reason }
    const msg = `${this.pool} target ${target.hostPort}: ${from} → ${to}: ${reason}`
    if (OUT_STATES.has(to)) this.log.warn(record, msg)
    else this.log.info(record, msg)
  }
}
