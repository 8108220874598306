// Splitting a route's traffic between pools by share (routes[].split). Each client is dealt a
// bucket, 0 to 9999, kept in a cookie; a pool takes the buckets below its cumulative share. A
// client keeps its bucket, so it keeps its pool while the shares stay, and a share that grows
// (a canary going from 5% to 20%) only moves clients toward the pool that grew.
//
// New clients are dealt buckets along a golden-ratio sequence from a random start: any run of
// clients covers the buckets evenly, so the shares hold from the first requests (a random draw
// per client would stray by several points over a thousand of them).
import type { SplitShare } from '../options/config.js'

export const BUCKETS = 10_000
const GOLDEN = 0.6180339887498949

export class BucketDealer {
  #position: number

  constructor (start = Math.random()) {
    this.#position = start
  }

  /** The next client's bucket. */
  deal (): number {
    this.#position = (this.#position + GOLDEN) % 1
    return Math.floor(this.#position * BUCKETS)
  }
}

/** The pool for a bucket: the first share that covers it, else the route's own pool. */
export function poolForBucket (shares: readonly SplitShare[], bucket: number, rest: string): string {
  for (let i = 0; i < shares.length; i++) if (bucket < shares[i]!.upTo) return shares[i]!.pool
  return rest
}

/**
 * The cookie's value for a bucket: opaque to the client (it names no pool), and short. A
 * client that changes it can only land where some bucket would have: a pool of the split.
 */
export function encodeBucket (bucket: number): string {
  return `b${bucket.toString(36)}`
}

/** The bucket a cookie value holds; null for anything the gateway did not write. */
export function decodeBucket (value: string | undefined): number | null {
  if (value === undefined || !/^b[0-9a-z]{1,3}$/.test(value)) return null
  const bucket = parseInt(value.slice(1), 36)
  return bucket < BUCKETS ? bucket : null
}
