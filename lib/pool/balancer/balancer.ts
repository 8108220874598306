// The interface every balancer implements. A balancer orders the available targets for one
// request: the first is the choice, the rest are the fallbacks a retry takes in turn.
import type { FastifyRequest } from 'fastify'
import type { Target } from '../target.js'

export interface Balancer {
  /** `targets` is non-empty and holds only targets that may take traffic now. */
  order (targets: readonly Target[], request: FastifyRequest): Target[]
}

/** Pure tie-breaker: the rest of `targets` after `first`, in their given order. */
export function withFirst (first: Target, targets: readonly Target[]): Target[] {
  const ordered = [first]
  for (const target of targets) if (target !== first) ordered.push(target)
  return ordered
}
