import type { BalancerConfig } from '../../options/config.js'
import type { Balancer } from './balancer.js'
import { RoundRobin } from './round-robin.js'
import { LeastRequest } from './least-request.js'
import { WeightedRandom } from './random.js'

export type { Balancer } from './balancer.js'

export function createBalancer (config: BalancerConfig): Balancer {
  switch (config.kind) {
    case 'round-robin': return new RoundRobin()
    case 'least-request': return new LeastRequest()
    case 'random': return new WeightedRandom()
    // p2c-ewma and hash arrive with the retries/balancing issue; until then they are refused
    // at registration (see validate.ts) rather than silently replaced.
    default: throw new Error(`balancer "${config.kind}" is not available yet`)
  }
}
