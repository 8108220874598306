// What every try on one target keeps, whether an HTTP attempt or a WebSocket handshake: when it
// began, the target's counters (a try is in flight from the moment it is made), and its line in
// the failure record's `attempts`.
import { performance } from 'node:perf_hooks'
import type { Dispatcher } from 'undici'
import type { Target } from '../pool/target.js'
import { connectionUse } from '../pool/protocol.js'
import type { Timeouts } from '../options/config.js'
import { GatewayError, GATEWAY_CODES } from '../errors/classify.js'
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

/** A try that keeps its own connect timer and can be left behind (an attempt, a handshake). */
export interface SendableTry extends TargetTry {
  /** Still waiting for its connection: not connected, not ended. */
  readonly awaitingConnection: boolean
  startConnectTimer: (ms: number, onTimeout: () => void) => void
  abandon: () => void
}

/** What one try sends, besides the target and the timeouts `sendTry` fills in. */
export type TryRequest = Omit<Dispatcher.DispatchOptions, 'origin' | 'headersTimeout' | 'bodyTimeout'>

/**
 * Sends one try on its target's own pool (its connector, TLS options and connect gate), with
 * timeouts.connect on the gateway's timer, to the millisecond, and undici's own timers a
 * second behind ours as a backstop. `failed` hears of a connect timeout or a refused dispatch;
 * everything else reaches `handler`.
 */
export function sendTry (attempt: SendableTry, handler: Dispatcher.DispatchHandler, timeouts: Timeouts, request: TryRequest, failed: (err: unknown) => void): void {
  const { connect, headers, body } = timeouts
  const target = attempt.target
  try {
    target.client(backstop(connect), connectionUse(request.body, request.upgrade)).dispatch(Object.assign({ origin: target.origin, headersTimeout: backstop(headers), bodyTimeout: backstop(body) }, request), handler)
  } catch (err) {
    attempt.abandon()
    failed(err)
    return
  }
  // undici puts a try on an idle keep-alive connection within dispatch() (onConnect has run
  // by now): only a try still waiting for its connection needs the connect timer, so the
  // common case sets and clears no timer at all.
  if (connect !== false && attempt.awaitingConnection) {
    attempt.startConnectTimer(connect, () => {
      attempt.abandon()
      failed(new GatewayError(GATEWAY_CODES.connectTimeout, `no connection within ${connect} ms`))
    })
  }
}
