// Weighted random order (Efraimidis–Spirakis): each target draws u^(1/weight) and the highest
// draw goes first, so the first pick follows the weights and the fallbacks are random too.
import type { Balancer } from './balancer.js'
import type { Target } from '../target.js'

export class WeightedRandom implements Balancer {
  constructor (private readonly random: () => number = Math.random) {}

  order (targets: readonly Target[]): Target[] {
    const now = Date.now()
    const keyed = targets.map((target) => ({ target, key: Math.pow(this.random(), 1 / target.effectiveWeight(now)) }))
    keyed.sort((a, b) => b.key - a.key)
    return keyed.map((k) => k.target)
  }
}
