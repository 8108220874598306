// Rolling request stats for one series (a pool, or one target of it): a ring of ten-second
// slots, fifteen minutes deep, read as the last 1, 5 and 15 minutes. The windows slide: "1 min"
// is the slots that overlap the last 60 seconds, not the current calendar minute. Recording
// touches one slot, found by index; a slot is reset in place when its time comes round again,
// so nothing is allocated per request. Time is a parameter everywhere, for tests.
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { BUCKETS, bucketOf, newCounts, quantile, upperBound } from './histogram.js'

/** Each slot holds this many ms. */
export const SLOT_MS = 10_000
const MINUTE = 60_000
/** Fifteen minutes of slots, and the one the oldest window's start falls in. */
const SLOTS = (15 * MINUTE) / SLOT_MS + 1

interface Slot {
  /** Which slot of time it holds now: floor(ms / SLOT_MS). */
  index: number
  requests: number
  status5xx: number
  retried: number
  aborted: number
  sumMs: number
  errors: Map<ProxyErrorType, number>
  latency: Uint32Array
  /** Requests slower than each of the series' marks. */
  over: Uint32Array
}

/** What a window of a series holds, in numbers a diagnosis reads. */
export interface WindowStats {
  /** The window's length in minutes. */
  minutes: number
  requests: number
  /** Requests per second over the window. */
  rate: number
  /** Answers of 5xx (the gateway's own or the upstream's). */
  status5xx: number
  /** Requests that needed more than one try. */
  retried: number
  /**
   * Requests the client abandoned before its answer ended (client_aborted): not the target's
   * fault, and counted apart: not in `requests`, `status5xx`, `errors` or `latency`.
   */
  aborted: number
  errors: Partial<Record<ProxyErrorType, number>>
  /** Milliseconds from arrival to the end of the answer; null without requests. */
  latency: { avg: number, p50: number, p95: number, p99: number } | null
}

export class RollingStats {
  /** By slot index modulo SLOTS; made the first time each is needed. */
  readonly #ring: Array<Slot | undefined> = new Array(SLOTS)

  /**
   * `marks`: latencies (ms) to count exactly the requests over (the diagnosis thresholds), so
   * "3 of 3 requests took over 2 s" is exact where the histogram would err; `born`: when
   * counting began (a window's rate counts no time before it).
   */
  constructor (readonly marks: readonly number[] = [], readonly born = Date.now()) {}

  record (now: number, ms: number, status: number, error: ProxyErrorType | null, retried: boolean): void {
    const slot = this.#slot(now)
    slot.requests++
    slot.sumMs += ms
    slot.latency[bucketOf(ms)]!++
    if (status >= 500) slot.status5xx++
    if (retried) slot.retried++
    if (error !== null) slot.errors.set(error, (slot.errors.get(error) ?? 0) + 1)
    for (let i = 0; i < this.marks.length; i++) if (ms > this.marks[i]!) slot.over[i]!++
  }

  /** A request the client abandoned before its answer ended. */
  recordAborted (now: number): void {
    this.#slot(now).aborted++
  }

  /** The last `minutes` minutes: every slot that overlaps them, the current one included. */
  window (now: number, minutes: 1 | 5 | 15): WindowStats {
    const latency = newCounts()
    const errors: Partial<Record<ProxyErrorType, number>> = {}
    let requests = 0
    let status5xx = 0
    let retried = 0
    let aborted = 0
    let sumMs = 0
    const first = this.#each(now, minutes, (slot) => {
      requests += slot.requests
      status5xx += slot.status5xx
      retried += slot.retried
      aborted += slot.aborted
      sumMs += slot.sumMs
      for (let i = 0; i < latency.length; i++) latency[i]! += slot.latency[i]!
      for (const [type, n] of slot.errors) errors[type] = (errors[type] ?? 0) + n
    })
    // The rate counts the time the slots cover, up to now, and none before counting began.
    const seconds = (now - Math.max(first * SLOT_MS, this.born)) / 1000
    return {
      minutes,
      requests,
      rate: requests / Math.max(seconds, 1),
      status5xx,
      retried,
      aborted,
      errors,
      latency: requests === 0
        ? null
        : { avg: sumMs / requests, p50: quantile(latency, requests, 0.5)!, p95: quantile(latency, requests, 0.95)!, p99: quantile(latency, requests, 0.99)! }
    }
  }

  /**
   * How many requests of the last `minutes` minutes took more than `ms`, counting only those
   * certainly over it: a histogram bucket that straddles `ms` is left out, so the count errs low.
   */
  countOver (now: number, minutes: 1 | 5 | 15, ms: number): number {
    const mark = this.marks.indexOf(ms)
    if (mark >= 0) {
      let exact = 0
      this.#each(now, minutes, (slot) => { exact += slot.over[mark]! })
      return exact
    }
    // The first bucket whose lower bound (the previous one's upper) is at least `ms`.
    let from = 0
    while (from < BUCKETS && (from === 0 ? 0 : upperBound(from - 1)) < ms) from++
    let count = 0
    this.#each(now, minutes, (slot) => {
      for (let i = from; i < slot.latency.length; i++) count += slot.latency[i]!
    })
    return count
  }

  /** Calls `visit` for each live slot of the window; returns the index of the window's first slot. */
  #each (now: number, minutes: number, visit: (slot: Slot) => void): number {
    const last = Math.floor(now / SLOT_MS)
    const first = Math.floor((now - minutes * MINUTE) / SLOT_MS)
    for (let index = first; index <= last; index++) {
      const slot = this.#ring[index % SLOTS]
      if (slot !== undefined && slot.index === index) visit(slot)
    }
    return first
  }

  #slot (now: number): Slot {
    const index = Math.floor(now / SLOT_MS)
    const at = index % SLOTS
    const slot = this.#ring[at]
    if (slot === undefined) {
      const made: Slot = { index, requests: 0, status5xx: 0, retried: 0, aborted: 0, sumMs: 0, errors: new Map(), latency: newCounts(), over: new Uint32Array(this.marks.length) }
      this.#ring[at] = made
      return made
    }
    if (slot.index !== index) {
      // Its time came round again: what it held is older than the longest window.
      slot.index = index
      slot.requests = slot.status5xx = slot.retried = slot.aborted = slot.sumMs = 0
      slot.errors.clear()
      slot.latency.fill(0)
      slot.over.fill(0)
    }
    return slot
  }
}
