// Power of two choices over a decaying latency average (as Linkerd and Finagle do): draw two
// targets at random (by weight), take the one whose latency × (requests in flight + 1) is
// lower. Cheap, needs no global view, and steers away from a slow target within a few requests.
import type { Balancer } from './balancer.js'
import type { Target } from '../target.js'

export class P2cEwma implements Balancer {
  constructor (private readonly random: () => number = Math.random) {}

  order (targets: readonly Target[]): Target[] {
    if (targets.length === 1) return [targets[0]!]
    const now = Date.now()
    const cost = costs(targets, now)
    const first = this.#draw(targets, now, null)
    const second = this.#draw(targets, now, first)
    const [best, other] = cost.get(first)! <= cost.get(second)! ? [first, second] : [second, first]
    const rest = targets.filter((t) => t !== best && t !== other).sort((a, b) => cost.get(a)! - cost.get(b)!)
    return [best, other, ...rest]
  }

  /** One target at random, in proportion to its weight, other than `not`. */
  #draw (targets: readonly Target[], now: number, not: Target | null): Target {
    let total = 0
    for (const t of targets) if (t !== not) total += t.effectiveWeight(now)
    let point = this.random() * total
    for (const t of targets) {
      if (t === not) continue
      point -= t.effectiveWeight(now)
      if (point < 0) return t
    }
    return targets.find((t) => t !== not)!
  }
}

/** Latency × (in flight + 1) ÷ weight. A target with no sample yet costs the average of the others. */
function costs (targets: readonly Target[], now: number): Map<Target, number> {
  const known = targets.map((t) => t.decayedLatency(now)).filter((l): l is number => l !== null)
  const neutral = known.length > 0 ? known.reduce((a, b) => a + b, 0) / known.length : 0
  return new Map(targets.map((t) => [t, ((t.decayedLatency(now) ?? neutral) * (t.inFlight + 1)) / t.effectiveWeight(now)]))
}
