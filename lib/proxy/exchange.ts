// The life of one proxied request: which targets it tries, each try's progress and outcome,
// the total timeout across tries, and how it ends (a streamed response, or one failure record).
import { performance } from 'node:perf_hooks'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import type { Target } from '../pool/target.js'
import { classify, GATEWAY_CODES, type Progress } from '../errors/classify.js'
import { makeFailure, type AttemptRecord, type Failure, type FailureContext } from '../errors/failure.js'

type FailureDetails = Pick<FailureContext, 'phase' | 'cause' | 'why' | 'status' | 'receivedStatus' | 'retryAfter'>
import type { ProxyErrorType } from '../errors/taxonomy.js'

export const kExchange = Symbol('fastify-upstream.exchange')

/** How an exchange reports its end; `routes.ts` wires these to the error responder and log. */
export interface ExchangeEvents {
  /** No response reached the client: answer with the failure. */
  failed: (exchange: Exchange, failure: Failure) => void
  /** The response had started: the client connection was cut; log the failure. */
  broken: (exchange: Exchange, failure: Failure) => void
  /** The client went away first. */
  aborted: (exchange: Exchange, phase: string) => void
}

class GatewayError extends Error {
  constructor (readonly code: string, message: string) { super(message) }
}

export class Exchange {
  readonly startedAt = performance.now()
  readonly attempts: AttemptRecord[] = []
  /** Set once: the exchange has ended one way or another; late events are ignored. */
  settled = false
  responseStarted = false
  target: Target | null = null

  #candidates: Target[] | null = null
  #next = 0
  #attempt: Attempt | null = null
  #opts: Dispatcher.DispatchOptions | null = null
  #downstream: Dispatcher.DispatchHandler | null = null
  #downstreamStarted = false
  #totalTimer: NodeJS.Timeout | null = null

  constructor (
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly route: RouteConfig,
    readonly pool: UpstreamPool,
    private readonly events: ExchangeEvents
  ) {
    this.#totalTimer = setTimeout(() => {
      this.abort(new GatewayError(GATEWAY_CODES.totalTimeout, `timeouts.total (${route.timeouts.total} ms) passed`))
    }, route.timeouts.total)
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished && !this.settled) {
        this.abort(new GatewayError(GATEWAY_CODES.clientAborted, 'client closed the connection'))
      }
    })
  }

  get ms (): number {
    return performance.now() - this.startedAt
  }

  /** Called by the dispatcher with reply-from's request and its handler. */
  start (opts: Dispatcher.DispatchOptions, downstream: Dispatcher.DispatchHandler): void {
    this.#opts = opts
    this.#downstream = downstream
    this.#candidates = this.pool.candidates(this.request)
    if (this.#candidates.length === 0) {
      const outage = this.pool.outage()
      this.#fail('destination_unavailable', { phase: 'route', why: `\n${outage.why}`, retryAfter: outage.retryAfter })
      return
    }
    this.#tryNext()
  }

  /** Ends the exchange early (total timeout, client gone). */
  abort (reason: GatewayError): void {
    if (this.settled) return
    const attempt = this.#attempt
    if (attempt === null) {
      this.#fail('proxy_internal_error', { phase: 'route', cause: reason.code })
    } else if (attempt.controller !== null) {
      attempt.controller.abort(reason)
    } else {
      // Still connecting: undici gives no handle yet, so leave the try behind and end now.
      attempt.abandon()
      this.onAttemptError(attempt, reason)
    }
  }

  #tryNext (): void {
    const target = this.#candidates![this.#next++]!
    this.target = target
    const attempt = new Attempt(this, target)
    this.#attempt = attempt
    const opts = this.#opts!
    const headers = { ...(opts.headers as Record<string, string>), host: target.hostHeader }
    try {
      target.client(this.route.timeouts.connect).dispatch({
        origin: target.url,
        path: opts.path,
        method: opts.method,
        headers,
        body: opts.body ?? null,
        // Our own timer enforces timeouts.headers to the millisecond; undici's is a backstop.
        headersTimeout: this.route.timeouts.headers + 1000,
        bodyTimeout: this.route.timeouts.body
      }, attempt)
    } catch (err) {
      this.onAttemptError(attempt, err)
    }
  }

  onAttemptStart (context: unknown): void {
    if (!this.#downstreamStarted) {
      this.#downstreamStarted = true
      this.#downstream!.onRequestStart?.(this.#controllerFacade, context)
    }
  }

  onAttemptResponse (attempt: Attempt, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    attempt.status = statusCode
    this.attempts.push(attempt.record(null, null, 'headers'))
    this.pool.recordResponse(attempt.target, statusCode, attempt.ms)
    this.responseStarted = true
    this.#downstream!.onResponseStart?.(this.#controllerFacade, statusCode, headers, statusMessage)
  }

  onAttemptData (chunk: Buffer): void {
    this.#downstream!.onResponseData?.(this.#controllerFacade, chunk)
  }

  onAttemptEnd (trailers: Record<string, string | string[] | undefined>): void {
    this.#settle()
    this.#downstream!.onResponseEnd?.(this.#controllerFacade, trailers)
  }

  onAttemptError (attempt: Attempt, err: unknown): void {
    if (this.settled) return
    const progress: Progress = { connected: attempt.connected, requestSent: attempt.connected && this.#requestSent(), responseStarted: attempt.responseStarted }
    const verdict = classify(err, progress)
    if (verdict.error === 'client_aborted') {
      this.#settle()
      this.events.aborted(this, verdict.phase)
      return
    }
    const record = attempt.record(verdict.error, verdict.cause, verdict.phase)
    // A try whose body broke was recorded when its headers came: that record now tells the end.
    if (attempt.responseStarted) this.attempts[this.attempts.length - 1] = record
    else this.attempts.push(record)
    this.pool.recordFailure(attempt.target, verdict.error, verdict.cause)
    const context = { phase: verdict.phase, cause: verdict.cause }
    if (attempt.responseStarted) {
      // The client already has the upstream's status; the record says so rather than the 502
      // or 504 it would have got had the failure come before the headers.
      const failure = this.#failure(verdict.error, { ...context, status: attempt.status!, receivedStatus: attempt.status! })
      this.#settle()
      this.events.broken(this, failure)
      return
    }
    this.#fail(verdict.error, context)
  }

  #fail (error: ProxyErrorType, context: FailureDetails): void {
    const failure = this.#failure(error, context)
    this.#settle()
    // reply-from's handler is left without an answer on purpose: it would log the error a
    // second time and pick its own status. The gateway answers with the failure record.
    this.events.failed(this, failure)
  }

  #failure (error: ProxyErrorType, context: FailureDetails): Failure {
    return makeFailure(error, {
      ...context,
      pool: this.pool.name,
      target: this.target?.hostPort ?? null,
      attempts: this.attempts,
      ms: this.ms,
      timeouts: this.route.timeouts,
      healthPath: this.pool.config.health?.path ?? null
    })
  }

  /** The gateway has taken over the answer (an intercepted status): ignore what follows. */
  end (): void {
    this.#settle()
  }

  #settle (): void {
    this.settled = true
    if (this.#totalTimer !== null) clearTimeout(this.#totalTimer)
    this.#totalTimer = null
  }

  /** Whether the client's request body (if any) has been read in full, hence passed on. */
  #requestSent (): boolean {
    return this.request.raw.complete
  }

  // The one controller reply-from's handler sees, whichever try is active underneath.
  readonly #controllerFacade: Dispatcher.DispatchController = {
    get aborted () { return false },
    get paused () { return false },
    get reason () { return null },
    abort: (reason: Error) => { this.abort(new GatewayError(GATEWAY_CODES.clientAborted, reason?.message ?? 'aborted')) },
    pause: () => { this.#attempt?.controller?.pause() },
    resume: () => { this.#attempt?.controller?.resume() }
  }
}

/** One try on one target; undici calls it as the request progresses. */
class Attempt implements Dispatcher.DispatchHandler {
  readonly startedAt = performance.now()
  controller: Dispatcher.DispatchController | null = null
  connected = false
  responseStarted = false
  status: number | null = null
  #abandoned = false
  #ended = false
  #headersTimer: NodeJS.Timeout | null = null

  constructor (private readonly exchange: Exchange, readonly target: Target) {
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

  abandon (): void {
    this.#abandoned = true
    this.#end()
  }

  onRequestStart (controller: Dispatcher.DispatchController, context: unknown): void {
    this.controller = controller
    if (this.#abandoned) {
      controller.abort(new Error('abandoned by the gateway'))
      return
    }
    this.connected = true
    this.#startHeadersTimer(controller)
    this.exchange.onAttemptStart(context)
  }

  // timeouts.headers counts from the request sent: at once for a request without a body (or
  // one already read), otherwise from the end of the client's body.
  #startHeadersTimer (controller: Dispatcher.DispatchController): void {
    const start = (): void => {
      if (this.#ended || this.responseStarted) return
      const ms = this.exchange.route.timeouts.headers
      this.#headersTimer = setTimeout(() => {
        controller.abort(new GatewayError(GATEWAY_CODES.headersTimeout, `no response headers within ${ms} ms`))
      }, ms)
    }
    const raw = this.exchange.request.raw
    if (raw.complete) start()
    else raw.once('end', start)
  }

  #clearHeadersTimer (): void {
    if (this.#headersTimer !== null) clearTimeout(this.#headersTimer)
    this.#headersTimer = null
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    if (this.#abandoned) return
    this.responseStarted = true
    this.#clearHeadersTimer()
    this.exchange.onAttemptResponse(this, statusCode, headers, statusMessage)
  }

  onResponseData (_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#abandoned) this.exchange.onAttemptData(chunk)
  }

  onResponseEnd (_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.#end()
    if (!this.#abandoned) this.exchange.onAttemptEnd(trailers)
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.#end()
    if (!this.#abandoned) this.exchange.onAttemptError(this, err)
  }

  #end (): void {
    if (this.#ended) return
    this.#ended = true
    this.#clearHeadersTimer()
    this.target.inFlight--
  }
}
