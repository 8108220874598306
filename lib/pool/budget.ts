// The retry budget (as Envoy's and Finagle's): retries may add at most `ratio` of the pool's
// request rate, with a floor of `minPerSecond`, so a failing pool is not hammered by a storm
// of retries on top of its normal traffic. Counted over a sliding second of ten slices.
const SLICES = 10
const SLICE_MS = 100

export class RetryBudget {
  readonly #requests = new Array<number>(SLICES).fill(0)
  readonly #retries = new Array<number>(SLICES).fill(0)
  #slice = 0
  #sliceStart = 0

  constructor (private readonly ratio: number, private readonly minPerSecond: number, private readonly now: () => number = Date.now) {}

  /** Counts a first try. */
  request (): void {
    this.#advance()
    this.#requests[this.#slice]!++
  }

  /** Takes one retry from the budget if there is one left this second. */
  tryRetry (): boolean {
    this.#advance()
    const requests = sum(this.#requests)
    const retries = sum(this.#retries)
    if (retries + 1 > Math.max(this.minPerSecond, this.ratio * requests)) return false
    this.#retries[this.#slice]!++
    return true
  }

  #advance (): void {
    const now = this.now()
    const elapsed = Math.floor((now - this.#sliceStart) / SLICE_MS)
    if (elapsed <= 0) return
    for (let i = 0; i < Math.min(elapsed, SLICES); i++) {
      this.#slice = (this.#slice + 1) % SLICES
      this.#requests[this.#slice] = 0
      this.#retries[this.#slice] = 0
    }
    this.#sliceStart = now - ((now - this.#sliceStart) % SLICE_MS)
  }
}

function sum (values: number[]): number {
  let total = 0
  for (const v of values) total += v
  return total
}
