// Rolling request stats for one series (a pool, or one target of it): a ring of one-minute
// slots, fifteen deep, read as the last 1, 5 and 15 minutes. Recording touches the current
// slot only; a slot is reused in place when its minute comes round again.
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { bucketOf, newCounts, quantile } from './histogram.js'

const SLOTS = 15
const MINUTE = 60_000

interface Slot {
  minute: number
  requests: number
  status5xx: number
  retried: number
  aborted: number
  sumMs: number
  errors: Map<ProxyErrorType, number>
  latency: Uint32Array
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
  readonly #slots: Slot[] = []

  record (now: number, ms: number, status: number, error: ProxyErrorType | null, retried: boolean): void {
    const slot = this.#slot(Math.floor(now / MINUTE))
    slot.requests++
    slot.sumMs += ms
    slot.latency[bucketOf(ms)]!++
    if (status >= 500) slot.status5xx++
    if (retried) slot.retried++
    if (error !== null) slot.errors.set(error, (slot.errors.get(error) ?? 0) + 1)
  }

  /** A request the client abandoned before its answer ended. */
  recordAborted (now: number): void {
    this.#slot(Math.floor(now / MINUTE)).aborted++
  }

  /** The last `minutes` minutes, this one included. */
  window (now: number, minutes: 1 | 5 | 15): WindowStats {
    const current = Math.floor(now / MINUTE)
    const latency = newCounts()
    const errors: Partial<Record<ProxyErrorType, number>> = {}
    let requests = 0
    let status5xx = 0
    let retried = 0
    let aborted = 0
    let sumMs = 0
    for (const slot of this.#slots) {
      if (slot.minute <= current - minutes || slot.minute > current) continue
      requests += slot.requests
      status5xx += slot.status5xx
      retried += slot.retried
      aborted += slot.aborted
      sumMs += slot.sumMs
      for (let i = 0; i < latency.length; i++) latency[i]! += slot.latency[i]!
      for (const [type, n] of slot.errors) errors[type] = (errors[type] ?? 0) + n
    }
    // The current minute is partly over: the rate counts only the time that has passed.
    const seconds = (minutes - 1) * 60 + (now - current * MINUTE) / 1000
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

  #slot (minute: number): Slot {
    const last = this.#slots[this.#slots.length - 1]
    if (last !== undefined && last.minute === minute) return last
    const found = this.#slots.find((s) => s.minute === minute)
    if (found !== undefined) return found
    if (this.#slots.length < SLOTS) {
      const slot: Slot = { minute, requests: 0, status5xx: 0, retried: 0, aborted: 0, sumMs: 0, errors: new Map(), latency: newCounts() }
      this.#slots.push(slot)
      return slot
    }
    // Reuse the oldest slot: move it to the end so the newest is found first.
    let oldest = 0
    for (let i = 1; i < this.#slots.length; i++) if (this.#slots[i]!.minute < this.#slots[oldest]!.minute) oldest = i
    const slot = this.#slots.splice(oldest, 1)[0]!
    slot.minute = minute
    slot.requests = slot.status5xx = slot.retried = slot.aborted = slot.sumMs = 0
    slot.errors.clear()
    slot.latency.fill(0)
    this.#slots.push(slot)
    return slot
  }
}
