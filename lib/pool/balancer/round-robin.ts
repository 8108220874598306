// Smooth weighted round-robin, as nginx does it: every pick adds each target's weight to its
// running score, takes the highest, and subtracts the total from the winner. Weights 5:1:1 give
// a,a,b,a,c,a,a rather than a burst of five a's.
import type { Balancer } from './balancer.js'
import type { Target } from '../target.js'

export class RoundRobin implements Balancer {
  readonly #score = new WeakMap<Target, number>()

  order (targets: readonly Target[]): Target[] {
    const now = Date.now()
    let total = 0
    let best: Target | undefined
    let bestScore = -Infinity
    for (const target of targets) {
      const weight = target.effectiveWeight(now)
      const score = (this.#score.get(target) ?? 0) + weight
      this.#score.set(target, score)
      total += weight
      if (score > bestScore) {
        best = target
        bestScore = score
      }
    }
    this.#score.set(best!, bestScore - total)
    // Fallbacks in the order they would be picked next.
    return [...targets].sort((a, b) => a === best ? -1 : b === best ? 1 : this.#score.get(b)! - this.#score.get(a)!)
  }
}
