// The sequence of tries one request makes on its pool, whatever it is: an HTTP exchange
// (exchange.ts) or a WebSocket handshake (websocket.ts). One piece of code decides for both
// which target comes next, waits for a pool's credentials or for room in its line, counts a
// failed try against its target, retries under the policy and the budget, and says why the
// request fails when no try is left. Each kind of request only sends its tries and relays what
// comes back.
//
// An exchange or a tunnel *is* a try sequence (a subclass), so a request allocates nothing more
// for it.
import { performance } from 'node:perf_hooks'
import type { FastifyRequest } from 'fastify'
import type { RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import type { Target } from '../pool/target.js'
import { waitForCredentials } from '../pool/credentials.js'
import { REFUSED_STREAM, type Classified } from '../errors/classify.js'
import { mismatchHint } from '../pool/sniff.js'
import type { AttemptRecord, FailureContext } from '../errors/failure.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { Candidates } from './candidates.js'
import { RoomWait } from './queue.js'
import { afterFailure, backoff, conditionOf } from './retry.js'
import type { TargetTry } from './try.js'
import type { Routed } from '../routing/router.js'

/** What a failure record gets from the request's side; the sequence adds the rest. */
export type FailureDetails = Pick<FailureContext, 'phase' | 'cause' | 'target' | 'why' | 'mismatch' | 'status' | 'receivedStatus' | 'retryAfter' | 'note' | 'detail' | 'temporary'>

/** Failures a protocol mismatch explains: TLS refused, closed before answering, not HTTP/1.1. */
const MISMATCH_SUSPECTS: ReadonlySet<ProxyErrorType> = new Set(['tls_protocol_error', 'connection_terminated', 'http_protocol_error'])

/** What the retry rules need to know of the request itself. */
export interface Replay {
  method: string
  /** The request (its body) can be sent again. */
  replayable: boolean
  /** Why not, in words, when it cannot. */
  why: string
}

export abstract class TrySequence<T extends TargetTry> {
  readonly startedAt = performance.now()
  /** Every try's line in the failure record, in order. */
  readonly attempts: AttemptRecord[] = []
  /** Set once: the request has ended one way or another; late events are ignored. */
  settled = false
  /** The target of the latest try. */
  target: Target | null = null
  /** The try in flight; null between tries (waiting, backing off). */
  protected current: T | null = null
  /** Tries made, for the tracing spans' numbers. */
  protected tries = 0
  #retries = 0
  #candidates: Candidates | null = null
  /** A pending wait: for credentials, for room in the line, or the backoff before a retry. */
  #waiting: { cancel: () => void } | null = null
  /** Waiting in line for a target with room (limits.queueTimeout over the whole wait). */
  readonly #room = new RoomWait()
  /** Where the request stands while no try is in flight (for a timeout or abort then). */
  protected waitingPhase: AttemptRecord['phase'] = 'route'
  /** The token the last try carried (pools.<name>.auth.token), to tell a 401 which one it refused. */
  #sentToken: string | null = null
  /** An upstream 401 already made this request ask for a new token: a second one goes to the client. */
  #reauthorized = false
  /** The Host the route's rewriteRequestHeaders set for every try; null: each target's own. */
  pinnedHost: string | null = null
  /**
   * How this request's pool was chosen (routing/router.ts; `pool` is the one chosen): the one
   * place later code reads it (the answer's cookies, the log, the metrics, a cache key).
   */
  routed: Routed | null = null

  constructor (
    readonly request: FastifyRequest,
    readonly route: RouteConfig,
    readonly pool: UpstreamPool,
    /** What is waiting, in the line's words ('request', 'upgrade'). */
    private readonly subject: string
  ) {}

  get ms (): number {
    return performance.now() - this.startedAt
  }

  /** Milliseconds this request spent in the pool's line. */
  get queueMs (): number {
    return this.#room.waitedMs
  }

  protected get retries (): number {
    return this.#retries
  }

  /** Something is pending between tries (credentials, room, a backoff). */
  protected get betweenTries (): boolean {
    return this.#waiting !== null
  }

  /** Sends `target` its try; `current` is the caller's to set. */
  protected abstract sendTo (target: Target): void
  /** Ends the request with this failure (no try is left, or none could be made). */
  protected abstract failWith (error: ProxyErrorType, details: FailureDetails): void
  /** The request as the retry rules see it. */
  protected abstract replay (): Replay

  /**
   * The targets this request may try, in order; false when no target of the pool may take
   * traffic (the outage has been answered). tryNext() makes the first try.
   */
  protected plan (): boolean {
    this.pool.budget.request()
    this.#candidates = new Candidates(this.pool, this.request, this.routed?.affinity ?? null)
    if (this.#candidates.empty) {
      this.failOutage()
      return false
    }
    return true
  }

  /** The next try: the next candidate that may take traffic and has room, else wait in line. */
  protected tryNext (): void {
    this.current = null
    const credentials = this.pool.credentials
    if (credentials !== null && !credentials.ready()) {
      // No token yet, or it expired, or a 401 retired it: wait for the one call in flight.
      this.waitingPhase = 'send'
      this.#waiting = waitForCredentials(credentials, () => {
        this.#waiting = null
        if (!this.settled) this.tryNext()
      }, (details) => {
        this.#waiting = null
        if (!this.settled) this.failWith('proxy_internal_error', details)
      })
      return
    }
    const target = this.#candidates!.pick()
    if (target === 'none') {
      this.#giveUp('no other target can take traffic')
      return
    }
    if (target === 'full') {
      this.#queue()
      return
    }
    this.target = target
    this.#room.reset()
    this.tries++
    this.sendTo(target)
  }

  /**
   * The gateway's own cookies for the answer: the split bucket a new client was just dealt and,
   * when a target `served` the answer, its affinity id (pools.<name>.sticky). Null for none.
   */
  routingCookies (served: boolean): string[] | null {
    const routed = this.routed
    if (routed === null) return null
    const sticky = served && routed.affinity !== null && this.target !== null ? routed.affinity.cookieFor(this.target, this.request) : null
    if (routed.splitCookie === null) return sticky === null ? null : [sticky]
    return sticky === null ? [routed.splitCookie] : [routed.splitCookie, sticky]
  }

  /** The Host a try on `target` sends. */
  protected hostFor (target: Target): string {
    return this.pinnedHost ?? target.hostHeader
  }

  /** Puts the pool's token on a try's headers, remembering which one went. */
  protected applyCredentials (headers: Record<string, unknown>): void {
    const credentials = this.pool.credentials
    if (credentials !== null) this.#sentToken = credentials.apply(headers)
  }

  /** Every target that may take it is full: wait in line for room. */
  #queue (): void {
    this.waitingPhase = 'queue'
    this.#waiting = this.#room.wait(this.pool, this.subject, () => {
      this.#waiting = null
      if (!this.settled) this.tryNext()
    }, (why) => {
      this.#waiting = null
      this.failWith('connection_limit_reached', { phase: 'queue', why, retryAfter: 1 })
    })
  }

  /** Another target may still take this request. */
  protected hasAnotherTry (): boolean {
    return this.#candidates!.hasAnother()
  }

  /**
   * A try failed in a way that counts against its target (refused, timed out, reset, bad
   * answer): counted, and tried again elsewhere when the policy, the request and the budget
   * allow; otherwise the failure stands.
   */
  protected failedTry (failed: T, verdict: Classified): void {
    const error = verdict.error as ProxyErrorType
    const { phase, cause } = verdict
    this.pool.recordFailure(failed.target, error, cause)
    // A target that could not even be connected to is not tried again in this request.
    if (conditionOf(error, phase) === 'connect-failure') this.#candidates!.unreachable(failed.target)
    const request = this.replay()
    const next = afterFailure({
      error,
      phase,
      cause,
      method: request.method,
      policy: this.route.retry,
      retries: this.#retries,
      replayable: request.replayable,
      unreplayableWhy: request.why
    }, () => this.hasAnotherTry(), this.pool.budget)
    if (!next.retry) {
      this.#failNamingMismatch(failed.target, error, { phase, cause, note: next.note })
      return
    }
    this.retryLater(next.free)
  }

  /**
   * The failure stands; when it is one a protocol mismatch explains, the target is asked what
   * it speaks first (pool/sniff.ts, at most a second, then remembered), so the hint names it.
   */
  #failNamingMismatch (target: Target, error: ProxyErrorType, details: FailureDetails): void {
    if (!MISMATCH_SUSPECTS.has(error) || details.cause === REFUSED_STREAM) {
      this.failWith(error, details)
      return
    }
    const { name, config } = this.pool
    target.speaks().then((speaks) => {
      if (this.settled) return
      const mismatch = mismatchHint({ hostPort: target.hostPort, pool: name, secure: target.origin.startsWith('https:'), protocol: config.protocol, speaks })
      this.failWith(error, mismatch === null ? details : { ...details, mismatch })
    }, () => { if (!this.settled) this.failWith(error, details) })
  }

  /** The next try after a backoff, or on the next turn of the event loop when `immediate`. */
  protected retryLater (immediate = false): void {
    this.#retries++
    this.tryAfter(immediate ? 0 : backoff(this.#retries), 'connect')
  }

  protected tryAfter (ms: number, phase: AttemptRecord['phase']): void {
    this.current = null
    this.waitingPhase = phase
    const timer = setTimeout(() => {
      this.#waiting = null
      if (!this.settled) this.tryNext()
    }, ms)
    this.#waiting = { cancel: () => { clearTimeout(timer) } }
  }

  /**
   * An upstream 401 to a request that carried the pool's token. The first in a request has the
   * token refreshed (see Credentials.unauthorized, which bounds how often), and the request is
   * sent again with the new one when the retry rules allow a replay: its method is in
   * retry.methods and its body could be kept. That is not a retry: retry.retries and the
   * budget are untouched. A second 401 goes to the client as sent.
   */
  protected replayUnauthorized (): boolean {
    const credentials = this.pool.credentials
    if (credentials === null || !credentials.hasToken || this.#reauthorized) return false
    this.#reauthorized = true
    const refreshed = credentials.unauthorized(this.#sentToken)
    const request = this.replay()
    return refreshed && this.route.retry.methods.has(request.method) && request.replayable
  }

  /** Out of targets for a retry: the last try's failure stands. */
  #giveUp (why: string): void {
    const last = [...this.attempts].reverse().find((a) => a.error !== null)
    if (last === undefined) {
      this.failOutage()
      return
    }
    this.failWith(last.error!, { phase: last.phase, cause: last.cause, note: `not retried: ${why}` })
  }

  /** No target to try: why (destination_unavailable, or the DNS failure of a pool with none yet). */
  protected failOutage (): void {
    const outage = this.pool.outage()
    this.failWith(outage.error, outage.context)
  }

  /** Nothing more is waited for (the request ended). */
  protected stopWaiting (): void {
    this.#waiting?.cancel()
    this.#waiting = null
  }
}
