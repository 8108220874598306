// Passive health (outlier detection, as Envoy's): the pure decisions about ejecting a target
// that requests keep failing on, and the detector that applies them and keeps the timers.
import type { OutlierConfig } from '../options/config.js'
import { FAILING_AFTER, type Target } from './target.js'
import type { Transitions } from './transitions.js'

/** How long the n-th ejection (1-based) lasts: doubling each time, up to maxEjectFor. */
export function ejectionTime (config: OutlierConfig, ejection: number): number {
  return Math.min(config.ejectFor * 2 ** Math.max(0, ejection - 1), config.maxEjectFor)
}

/**
 * Whether one more target may be ejected: never more than maxEjectedPercent of the pool, but
 * one target may always be ejected, whatever the percentage (as in Envoy).
 */
export function mayEject (config: OutlierConfig, ejectedNow: number, total: number): boolean {
  if (ejectedNow === 0) return true
  return ((ejectedNow + 1) / total) * 100 <= config.maxEjectedPercent
}

/** Whether a target's failure streak calls for ejection (a target on probation fails once). */
export function shouldEject (config: OutlierConfig, consecutiveFailures: number, probation: boolean): boolean {
  return probation || consecutiveFailures >= config.consecutiveFailures
}

/** Upstream answers that count as failures for ejection: the service says it cannot serve. */
export function isFailureStatus (status: number): boolean {
  return status === 502 || status === 503 || status === 504
}

/** While every target is ejected, one trial request at most this often (half-open). */
export const TRIAL_INTERVAL_MS = 1000

/**
 * Passive health of one pool: counts what requests say of each target, ejects those that keep
 * failing (when outlier detection is on), owns the timers that readmit them and the half-open
 * trial that may end an ejection early.
 */
export class OutlierDetector {
  /** Each ejected target's timer to readmit it; a successful trial ends it early. */
  readonly #timers = new Map<Target, NodeJS.Timeout>()
  /** The ejected target the current half-open trial went to; null once it ends. */
  #trial: Target | null = null
  /** When the last half-open trial was let through, whatever became of it: at most one a second. */
  #lastTrialAt = -Infinity

  constructor (
    /** pools.<name>.outlier; null: failures are counted and shown, nothing is ejected. */
    private readonly config: OutlierConfig | null,
    /** The pool's targets now (discovery changes the set). */
    private readonly targets: () => readonly Target[],
    private readonly transitions: Transitions
  ) {}

  /** A try got response headers that are not a failure: the target's streak ends. */
  succeeded (target: Target, status: number): void {
    if (this.isTrial(target)) {
      this.#trial = null
      this.#readmit(target, `a trial request succeeded (${target.hostPort} answered ${status}) while no target could take traffic; on probation: one more failure ejects it again`)
      return
    }
    if (target.consecutiveFailures >= FAILING_AFTER) {
      const failed = target.consecutiveFailures
      this.transitions.change(target, `answered ${status} after ${failed} failed requests in a row`, () => { target.countSuccess() })
    }
    target.countSuccess()
  }

  /** A try failed in the gateway's view (connect, timeout, reset, protocol, a 502/503/504). */
  failed (target: Target, error: string, cause: string | null, words?: string): void {
    const now = Date.now()
    // The clock ended an ejection whose timer has not run yet: end it first, so the records
    // read in order (ejected → healthy, then what this failure does) and its timer goes.
    if (target.ejectedUntil !== null && !target.isEjected(now) && this.#timers.has(target)) this.#readmit(target, this.#ejectionOver(target))
    if (this.#trial === target) this.#trial = null
    // What the target showed before this failure: the `from` of whatever it changes.
    const before = target.state(now)
    target.countFailure(error, cause, now)
    const last = words ?? `${error}${cause !== null ? ` (${cause})` : ''}`
    const config = this.config
    if (config === null || target.isEjected(now) || target.draining ||
      !shouldEject(config, target.consecutiveFailures, target.probation) ||
      !mayEject(config, this.targets().filter((t) => t.isEjected(now)).length, this.targets().length)) {
      if (before !== 'failing' && target.state(now) === 'failing') {
        this.transitions.change(target, `${target.consecutiveFailures} requests in a row failed, the last: ${last}`, () => {}, before)
      }
      return
    }
    // A target that stayed in for maxEjectFor since its last return starts afresh.
    if (target.ejections > 0 && now - target.since > config.maxEjectFor) target.forgetEjections()
    const ejection = target.ejections + 1
    const ms = ejectionTime(config, ejection)
    const streak = target.probation
      ? 'failed again on its first request back'
      : `${target.consecutiveFailures} ${target.consecutiveFailures === 1 ? 'failure' : 'failures'} in a row (outlier.consecutiveFailures = ${config.consecutiveFailures})`
    this.transitions.change(target, `ejected for ${ms} ms after ${streak}, the last: ${last}${ejection > 1 ? `; ejection ${ejection}, time doubled` : ''}`, () => {
      target.eject(ejection, now + ms, `ejected after ${streak}, the last: ${last}`)
    }, before)
    clearTimeout(this.#timers.get(target))
    const timer = setTimeout(() => { this.#readmit(target, this.#ejectionOver(target)) }, ms)
    timer.unref()
    this.#timers.set(target, timer)
  }

  /**
   * Half-open, as a circuit breaker: while no target may take traffic and some primary is out
   * only by ejection, one request at a time, at most one a second, goes to the ejected primary
   * whose ejection began first; its success ends that ejection. A single-target pool then
   * serves again within about a second of its service coming back, not after outlier.ejectFor,
   * and answers a fast 503 meanwhile (no connect per request). Null: no trial now.
   */
  trial (now = Date.now()): Target | null {
    // At most one a second, counted from the last trial whatever became of it: a trial that
    // succeeded and a re-ejection right after it do not open the door to another at once.
    if (now - this.#lastTrialAt < TRIAL_INTERVAL_MS) return null
    let first: Target | null = null
    for (const target of this.targets()) {
      if (target.backup || target.draining || target.health === 'unhealthy' || !target.isEjected(now)) continue
      // One trial at a time: ejected targets still busy with requests (a trial among them) wait.
      if (target.inFlight > 0) return null
      if (first === null || target.since < first.since) first = target
    }
    // The first trial comes a second after the ejection (or re-ejection) began, not at once.
    if (first === null || now - first.since < TRIAL_INTERVAL_MS) return null
    this.#trial = first
    this.#lastTrialAt = now
    return first
  }

  /** May this request try a target that is out: is it the half-open trial it was given? */
  isTrial (target: Target): boolean {
    return this.#trial === target && target.isEjected()
  }

  /** A target that left the pool: its timer and any trial go with it. */
  forget (target: Target): void {
    clearTimeout(this.#timers.get(target))
    this.#timers.delete(target)
    if (this.#trial === target) this.#trial = null
  }

  close (): void {
    for (const timer of this.#timers.values()) clearTimeout(timer)
    this.#timers.clear()
  }

  #ejectionOver (target: Target): string {
    const config = this.config!
    return `ejection of ${ejectionTime(config, target.ejections)} ms is over; on probation: one more failure ejects it for ${ejectionTime(config, target.ejections + 1)} ms`
  }

  /** An ejection is over (its time passed, or a trial succeeded): back in rotation, on probation. */
  #readmit (target: Target, reason: string): void {
    this.forget(target)
    // `from`: the clock may already have ended the ejection, so state() would not say so.
    this.transitions.change(target, reason, () => { target.readmit(true) }, 'ejected')
  }
}
