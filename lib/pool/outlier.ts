// Passive health (outlier detection, as Envoy's): pure decisions about ejecting a target that
// requests keep failing on. The pool applies them and keeps the timers.
import type { OutlierConfig } from '../options/config.js'

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
