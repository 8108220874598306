// Smooth weighted round-robin, as nginx does it: every pick adds each target's weight to its
// running score, takes the highest, and subtracts the total from the winner. Weights 5:1:1 give
// a,a,b,a,c,a,a rather than a burst of five a's.
import type { Balancer } from './balancer.js'
import type { Target } from '../target.js'

export class RoundRobin implements Balancer {
  readonly #score = new WeakMap<Target, number>()

  order (targets: readonly Target[]): Target[] {
    const now = Date.now()
    const count = targets.length
    // Scores in a local array: the ordering below reads them without a WeakMap lookup each.
    const scores = new Array<number>(count)
    let total = 0
    let best = 0
    for (let i = 0; i < count; i++) {
      const target = targets[i]!
      const weight = target.effectiveWeight(now)
      const score = (this.#score.get(target) ?? 0) + weight
      scores[i] = score
      total += weight
      if (score > scores[best]!) best = i
    }
    scores[best]! -= total
    for (let i = 0; i < count; i++) this.#score.set(targets[i]!, scores[i]!)
    // The pick first, then the fallbacks in the order they would be picked next: highest score
    // first, ties in list order (an insertion sort, stable; pools are small).
    const ordered: Target[] = [targets[best]!]
    const orderedScores: number[] = [Infinity]
    for (let i = 0; i < count; i++) {
      if (i === best) continue
      let at = ordered.length
      while (orderedScores[at - 1]! < scores[i]!) at--
      ordered.splice(at, 0, targets[i]!)
      orderedScores.splice(at, 0, scores[i]!)
    }
    return ordered
  }
}
