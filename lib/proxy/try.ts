// What every try on one target keeps, whether an HTTP attempt or a WebSocket handshake: when it
// began, the target's counters (a try is in flight from the moment it is made), and its line in
// the failure record's `attempts`.
import { performance } from 'node:perf_hooks'
import type { Target } from '../pool/target.js'
import type { AttemptRecord } from '../errors/failure.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'

export class TargetTry {
  readonly startedAt = performance.now()
  /** The upstream's status, once it answered. */
  status: number | null = null

  constructor (readonly target: Target) {
    target.inFlight++
    target.requests++
  }

  get ms (): number {
    return performance.now() - this.startedAt
  }

  record (error: ProxyErrorType | null, cause: string | null, phase: AttemptRecord['phase']): AttemptRecord {
    const record: AttemptRecord = { target: this.target.hostPort, error, cause, phase, ms: Math.round(this.ms) }
    if (this.status !== null) record.status = this.status
    return record
  }
}

/** undici's own timer behind one of ours: a second later, or none (0) when ours is off. */
export function backstop (ms: number | false): number {
  return ms === false ? 0 : ms + 1000
}
