// Consistent hashing with bounded loads (as Envoy's ring hash, with the bound from Mirrokni,
// Thorup and Zadimoghaddam): a key always lands on the same target while the set of targets
// stays, only about 1/n of keys move when a target joins or leaves, and no target takes more
// than LOAD_FACTOR × the mean of requests in flight — past that, the key walks on to the next.
import type { FastifyRequest } from 'fastify'
import type { Balancer } from './balancer.js'
import type { Target } from '../target.js'
import type { HashKey } from '../../options/types.js'
import { RoundRobin } from './round-robin.js'

export const LOAD_FACTOR = 1.25
/** Points on the ring for a target of the lowest weight in the pool. */
const POINTS_PER_WEIGHT = 100
const MAX_POINTS = 1000

interface Ring {
  points: Uint32Array
  owners: Target[]
}

export class ConsistentHash implements Balancer {
  readonly #fallback = new RoundRobin()
  #ring: Ring | null = null
  #ringOf = ''

  constructor (private readonly key: HashKey) {}

  order (targets: readonly Target[], request: FastifyRequest): Target[] {
    const key = keyOf(this.key, request)
    if (key === null) return this.#fallback.order(targets)
    return this.orderFor(key, targets)
  }

  /** The ordering for a key; exposed for tests that hash many keys without requests. */
  orderFor (key: string, targets: readonly Target[]): Target[] {
    const ring = this.#ringFor(targets)
    let inFlight = 0
    for (const t of targets) inFlight += t.inFlight
    const capacity = Math.ceil((LOAD_FACTOR * (inFlight + 1)) / targets.length)
    const ordered: Target[] = []
    const seen = new Set<Target>()
    const start = search(ring.points, hash(key))
    for (let i = 0; i < ring.points.length && seen.size < targets.length; i++) {
      const owner = ring.owners[(start + i) % ring.points.length]!
      if (seen.has(owner)) continue
      seen.add(owner)
      ordered.push(owner)
    }
    // The first target in ring order with room under the bound goes first; the rest keep order.
    const choice = ordered.findIndex((t) => t.inFlight + 1 <= capacity)
    if (choice > 0) ordered.unshift(...ordered.splice(choice, 1))
    return ordered
  }

  #ringFor (targets: readonly Target[]): Ring {
    const id = targets.map((t) => `${t.url}*${t.weight}`).join(' ')
    if (this.#ring !== null && this.#ringOf === id) return this.#ring
    const minWeight = Math.min(...targets.map((t) => t.weight))
    const entries: Array<[number, Target]> = []
    for (const target of targets) {
      const points = Math.min(MAX_POINTS, Math.round((POINTS_PER_WEIGHT * target.weight) / minWeight))
      // Points depend on the target's URL alone, so other targets coming and going move none.
      for (let i = 0; i < points; i++) entries.push([hash(`${target.url}#${i}`), target])
    }
    entries.sort((a, b) => a[0] - b[0])
    this.#ring = { points: Uint32Array.from(entries.map((e) => e[0])), owners: entries.map((e) => e[1]) }
    this.#ringOf = id
    return this.#ring
  }
}

export function keyOf (key: HashKey, request: FastifyRequest): string | null {
  if (key === 'ip') return request.ip
  const [kind, name] = [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1).toLowerCase()]
  if (kind === 'header') {
    const value = request.headers[name]
    return value === undefined || value === '' ? null : String(value)
  }
  const cookies = request.headers.cookie
  if (cookies === undefined) return null
  for (const pair of cookies.split(';')) {
    const eq = pair.indexOf('=')
    if (eq > 0 && pair.slice(0, eq).trim().toLowerCase() === name) return pair.slice(eq + 1).trim()
  }
  return null
}

/** FNV-1a, then murmur3's finalizer so near-identical keys spread over the whole ring. */
export function hash (text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The first ring point at or after `value` (wrapping to 0). */
function search (points: Uint32Array, value: number): number {
  let lo = 0
  let hi = points.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (points[mid]! < value) lo = mid + 1
    else hi = mid
  }
  return lo % points.length
}
