import type { BalancerConfig } from '../../options/config.js'
import type { Balancer } from './balancer.js'
import { RoundRobin } from './round-robin.js'
import { LeastRequest } from './least-request.js'
import { WeightedRandom } from './random.js'
import { P2cEwma } from './p2c-ewma.js'
import { ConsistentHash } from './hash.js'

export type { Balancer } from './balancer.js'

export function createBalancer (config: BalancerConfig): Balancer {
  switch (config.kind) {
    case 'round-robin': return new RoundRobin()
    case 'least-request': return new LeastRequest()
    case 'random': return new WeightedRandom()
    case 'p2c-ewma': return new P2cEwma()
    case 'hash': return new ConsistentHash(config.key)
  }
}
