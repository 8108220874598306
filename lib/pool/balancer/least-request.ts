// Least outstanding requests, relative to weight. Ties rotate, so idle targets share the load
// instead of the first one taking every request of a quiet period.
import type { Balancer } from './balancer.js'
import type { Target } from '../target.js'

export class LeastRequest implements Balancer {
  #turn = 0

  order (targets: readonly Target[]): Target[] {
    const start = this.#turn++ % targets.length
    const rotated = [...targets.slice(start), ...targets.slice(0, start)]
    // Array.prototype.sort is stable: equal loads keep the rotated order.
    const now = Date.now()
    const load = new Map(rotated.map((t) => [t, t.inFlight / t.effectiveWeight(now)]))
    return rotated.sort((a, b) => load.get(a)! - load.get(b)!)
  }
}
