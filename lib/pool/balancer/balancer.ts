// The interface every balancer implements. A balancer orders the available targets for one
// request: the first is the choice, the rest are the fallbacks a retry takes in turn.
import type { FastifyRequest } from 'fastify'
import type { Target } from '../target.js'

export interface Balancer {
  /** `targets` is non-empty and holds only targets that may take traffic now. */
  order (targets: readonly Target[], request: FastifyRequest): Target[]
}
