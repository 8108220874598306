// A fixed-bucket log histogram of milliseconds: eight buckets per doubling (each about 9% wide),
// from 10 µs to about 20 minutes. Recording is one log2 and one array increment, with no
// allocation; percentiles are read from the bucket counts. hdr-histogram-js is more precise,
// but every window of every target would hold one, and 9% is finer than any threshold here.

const PER_DOUBLING = 8
/** Values are scaled so 10 µs is 1, the first bucket's upper bound. */
const SCALE = 100
export const BUCKETS = 8 * 27

/** The bucket a value falls in. */
export function bucketOf (ms: number): number {
  const scaled = ms * SCALE
  if (!(scaled > 1)) return 0
  const i = Math.ceil(Math.log2(scaled) * PER_DOUBLING)
  return i < BUCKETS ? i : BUCKETS - 1
}

/** The upper bound of a bucket, in milliseconds: what a percentile in it reads as. */
export function upperBound (bucket: number): number {
  return 2 ** (bucket / PER_DOUBLING) / SCALE
}

export function newCounts (): Uint32Array {
  return new Uint32Array(BUCKETS)
}

/**
 * The value below which `q` (0..1) of the recorded values fall, from merged bucket counts; null
 * when there are none. Reads as the bucket's upper bound, so it errs high by at most 9%.
 */
export function quantile (counts: Uint32Array, total: number, q: number): number | null {
  if (total === 0) return null
  const rank = Math.max(1, Math.ceil(q * total))
  let seen = 0
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i]!
    if (seen >= rank) return upperBound(i)
  }
  return upperBound(counts.length - 1)
}
