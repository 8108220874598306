// The life of one proxied request: which targets it tries, each try's progress and outcome,
// waiting for a target with room, retries under the policy and the pool's budget, the total
// timeout across tries, and how it ends (a streamed response, or one failure record).
import { performance } from 'node:perf_hooks'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import type { Target } from '../pool/target.js'
import { Attempt } from './attempt.js'
import { Candidates } from './candidates.js'
import { closeConnectionAfter, endToEnd, type ResponseHeaders } from './forwarding.js'
import { classify, classifyClientFault, GatewayError, GATEWAY_CODES, type Progress } from '../errors/classify.js'
import { makeFailure, type AttemptRecord, type Failure, type FailureContext } from '../errors/failure.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { watchUpload, type UploadWatch } from './upload.js'
import { sendTry } from './try.js'
import { RoomWait } from './queue.js'
import { BodyTooLarge, bodyWithoutReading, prepareBody, type PreparedBody } from './body.js'
import { afterFailure, backoff, conditionOf, shouldRetryStatus } from './retry.js'
import { waitForCredentials } from '../pool/credentials.js'
import type { Tracing, TryOutcome } from '../observe/tracing.js'
import { Relay, type RelayRoute } from './relay.js'

const kExchange = Symbol('fastify-upstream.exchange')
type ExchangeResponse = ServerResponse & { [kExchange]?: Exchange }

function onResponseClose (this: ExchangeResponse): void {
  this[kExchange]!.onResponseClose()
}

/** One function for every exchange's total timer (setTimeout hands it the exchange). */
function onTotalTimeout (exchange: Exchange): void {
  exchange.onTotalTimeout()
}

/** Whether the client's request has a body, by its framing. */
function hasBody (raw: IncomingMessage): boolean {
  const length = raw.headers['content-length']
  return (length !== undefined && length !== '0') || raw.headers['transfer-encoding'] !== undefined
}

type FailureDetails = Pick<FailureContext, 'phase' | 'cause' | 'target' | 'why' | 'status' | 'receivedStatus' | 'retryAfter' | 'note' | 'detail' | 'temporary'>

/**
 * undici's callback-style handler, which each try is. Its response headers come raw, and go
 * to the client's reply in one pass (relay.ts): undici's newer controller-style API would
 * parse them into an object first.
 */
export type LegacyHandler = Pick<Dispatcher.DispatchHandler, 'onConnect' | 'onHeaders' | 'onData' | 'onComplete' | 'onError'>

/** How an exchange reports its end; `routes.ts` wires these to the error responder and log. */
export interface ExchangeEvents {
  /** No response reached the client: answer with the failure. */
  failed: (exchange: Exchange, failure: Failure) => void
  /** The response had started: the client connection was cut; log the failure. */
  broken: (exchange: Exchange, failure: Failure) => void
  /** The client went away first. */
  aborted: (exchange: Exchange, phase: string) => void
  /** The response was delivered after one or more failed tries. */
  recovered: (exchange: Exchange, status: number) => void
  /** The response was delivered at the first try (for stats; nothing to log). */
  completed: (exchange: Exchange, status: number) => void
  /** The upstream answered with a status errors.intercept names: the gateway answers instead. */
  intercepted: (exchange: Exchange, status: number, headers: ResponseHeaders) => void
}

export class Exchange {
  readonly startedAt = performance.now()
  readonly attempts: AttemptRecord[] = []
  /** Set once: the exchange has ended one way or another; late events are ignored. */
  settled = false
  target: Target | null = null

  #candidates: Candidates | null = null
  #retries = 0
  #attempt: Attempt | null = null
  /** The upstream request-target (routes.ts maps the client's path through rewritePrefix). */
  #path = ''
  /** The request headers every try sends; each sets its own Host (and credentials) in place. */
  #headers: Record<string, string> | null = null
  #body: PreparedBody | null = null
  /** The answer on its way to the client, once a try has one to deliver. */
  #relay: Relay | null = null
  #totalTimer: NodeJS.Timeout | null = null
  /** Watches the client's upload for a stall (timeouts.body); null without a body to watch. */
  #upload: UploadWatch | null = null
  /** A pending wait: for room in the queue, or the backoff before a retry. */
  #waiting: { cancel: () => void } | null = null
  /** Waiting in line for a target with room (limits.queueTimeout over the whole wait). */
  readonly #room = new RoomWait()
  /** Where the exchange stands while no try is in flight (for a timeout or abort then). */
  #waitingPhase: AttemptRecord['phase'] = 'route'
  /** The token the last try carried (pools.<name>.auth.token), to tell a 401 which one it refused. */
  #sentToken: string | null = null
  /** An upstream 401 already made this exchange ask for a new token: a second one goes to the client. */
  #reauthorized = false
  /** The context the try spans hang from; null when tracing is off. */
  readonly #traceParent: object | null
  #tries = 0

  constructor (
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly route: RouteConfig,
    readonly pool: UpstreamPool,
    private readonly events: ExchangeEvents,
    private readonly relayRoute: RelayRoute,
    private readonly tracing: Tracing | null = null
  ) {
    this.#traceParent = tracing?.requestContext(request) ?? null
    const { total, body } = route.timeouts
    if (total !== false) {
      this.#totalTimer = setTimeout(onTotalTimeout, total, this)
    }
    if (body !== false && this.#clientStillSending()) {
      this.#upload = watchUpload(request.raw, body, {
        clientStalled: () => {
          this.abort(new GatewayError(GATEWAY_CODES.clientBodyTimeout, `The client sent no part of its body for ${body} ms (timeouts.body) before finishing it. Raise timeouts.body for this route if clients upload this slowly.`))
        },
        upstreamStalled: () => {
          this.abort(new GatewayError(GATEWAY_CODES.sendTimeout, `the upstream took no part of the request body for ${body} ms`))
        },
        sending: () => this.#attempt?.connected === true
      })
    }
    // One shared listener, the exchange found on the response: no closure per request.
    ;(reply.raw as ExchangeResponse)[kExchange] = this
    reply.raw.on('close', onResponseClose)
  }

  /** The client's response closed: unless it was delivered whole, the client went away. */
  onResponseClose (): void {
    if (!this.reply.raw.writableFinished && !this.settled) {
      this.abort(new GatewayError(GATEWAY_CODES.clientAborted, 'client closed the connection'))
    }
  }

  get ms (): number {
    return performance.now() - this.startedAt
  }

  /** timeouts.total passed: the client was still uploading, or the exchange took too long. */
  onTotalTimeout (): void {
    const total = this.route.timeouts.total as number
    this.abort(this.#clientStillSending()
      ? new GatewayError(GATEWAY_CODES.clientBodyTimeout, `The client had not sent its whole body when timeouts.total (${total} ms) passed. Raise timeouts.total for this route if uploads this slow are expected.`)
      : new GatewayError(GATEWAY_CODES.totalTimeout, `timeouts.total (${total} ms) passed`))
  }

  /**
   * Sends the request upstream: `path` is the request-target, `headers` this exchange's own copy
   * (forwarding.ts), `body` the client's body stream when Fastify handed one over.
   */
  start (path: string, headers: Record<string, string>, body: IncomingMessage | undefined): void {
    this.#path = path
    this.#headers = headers
    const limit = this.route.bodyLimit
    if (limit !== null && headers['content-length'] !== undefined && Number(headers['content-length']) > limit) {
      this.#refuseBody(`declares ${headers['content-length']} bytes (Content-Length)`)
      return
    }
    this.pool.budget.request()
    this.#candidates = new Candidates(this.pool, this.request)
    if (this.#candidates.empty) {
      this.#failOutage()
      return
    }
    const sent = body ?? this.#unparsedBody()
    const ready = bodyWithoutReading(sent)
    if (ready !== null) {
      this.#body = ready
      this.#tryNext()
      return
    }
    prepareBody(sent, headers['content-length'], limit).then((body) => {
      this.#body = body
      if (!this.settled) this.#tryNext()
    }, (err) => {
      if (this.settled) return
      if (err instanceof BodyTooLarge) {
        this.#refuseBody(`passed ${err.limit} bytes while it was read for replay`)
        return
      }
      // Reading the client's body failed otherwise: the client went away while sending it.
      this.#aborted('send')
    })
  }

  /** Ends the exchange early (total timeout, client gone). */
  abort (reason: GatewayError): void {
    if (this.settled) return
    const attempt = this.#attempt
    if (this.#waiting !== null || attempt === null) {
      // Between tries (queued, backing off, reading the body): nothing is in flight to cut.
      this.#waiting?.cancel()
      this.#waiting = null
      if (reason.code === GATEWAY_CODES.clientBodyTimeout) {
        this.#clientTooSlow(reason.message)
        return
      }
      this.#failWith(reason, { connected: attempt?.connected ?? false, requestSent: false, responseStarted: false }, this.#waitingPhase)
    } else if (attempt.abortTry !== null) {
      attempt.abortTry(reason)
    } else {
      // Still connecting: undici gives no handle yet, so leave the try behind and end now.
      attempt.abandon()
      this.onAttemptError(attempt, reason)
    }
  }

  /** The next try: the next candidate that may take traffic and has room, else wait in line. */
  #tryNext (): void {
    this.#attempt = null
    const credentials = this.pool.credentials
    if (credentials !== null && !credentials.ready()) {
      // No token yet, or it expired, or a 401 retired it: wait for the one call in flight.
      this.#waitingPhase = 'send'
      this.#waiting = waitForCredentials(credentials, () => {
        this.#waiting = null
        if (!this.settled) this.#tryNext()
      }, (details) => {
        this.#waiting = null
        if (!this.settled) this.#fail('proxy_internal_error', details)
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
    const attempt = new Attempt(this, target)
    this.#attempt = attempt
    // The headers object is this exchange's own: set the try's Host in place.
    const headers = this.#headers!
    headers.host = target.hostHeader
    if (credentials !== null) this.#sentToken = credentials.apply(headers)
    this.#tries++
    if (this.tracing === null) {
      this.#send(attempt, headers)
      return
    }
    attempt.span = this.tracing.startTry(this.#traceParent!, this.pool.name, target.hostPort, this.#tries)
    this.tracing.sendWithin(this.#traceParent!, attempt.span, headers, () => { this.#send(attempt, headers) })
  }

  #send (attempt: Attempt, headers: Record<string, string>): void {
    sendTry(attempt, attempt, this.route.timeouts, { path: this.#path, method: this.request.method as Dispatcher.HttpMethod, headers, body: this.#body!.body }, (err) => {
      this.onAttemptError(attempt, err)
    })
  }

  /** A try's answer the client will not see (another try follows): its span ends, its body is not read. */
  #dropAnswer (attempt: Attempt, status: number, why: string): void {
    this.#endSpan(attempt, status)
    attempt.abandon()
    attempt.abortTry?.(new GatewayError('FST_UPSTREAM_RETRIED', why))
  }

  /** Ends a try's span, if it has one still open: answered with `status`, or failed. */
  #endSpan (attempt: Attempt | null, status: number | null, failure?: TryOutcome): void {
    const span = attempt?.span
    if (span == null) return
    attempt!.span = null
    if (failure !== undefined) {
      this.tracing!.failed(span, failure)
    } else if (status !== null) {
      this.tracing!.answered(span, status)
    } else {
      span.end()
    }
  }

  #queue (): void {
    this.#waitingPhase = 'queue'
    this.#waiting = this.#room.wait(this.pool, 'request', () => {
      this.#waiting = null
      if (!this.settled) this.#tryNext()
    }, (why) => {
      this.#waiting = null
      this.#fail('connection_limit_reached', { phase: 'queue', why, retryAfter: 1 })
    })
  }

  onAttemptResponse (attempt: Attempt, statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    attempt.status = statusCode
    this.pool.recordResponse(attempt.target, statusCode, attempt.ms)
    this.attempts.push(attempt.record(null, null, 'headers'))
    if (statusCode === 401 && this.#replayUnauthorized()) {
      // The upstream refused the gateway's token: the client never sees this answer.
      this.#dropAnswer(attempt, statusCode, 'sending again with a new token after 401')
      this.#tryAfter(0, 'send')
      return false
    }
    const policy = this.route.retry
    if (shouldRetryStatus(statusCode, this.request.method, policy, this.#retries, this.#body!.replayable) && this.#hasAnotherTry() && this.pool.budget.tryRetry()) {
      // This answer is dropped for another try: the client never sees it.
      this.#dropAnswer(attempt, statusCode, `retrying after status ${statusCode}`)
      this.#retryLater()
      return false
    }
    // Backpressure passes straight through: the relay's return value pauses the try, and the
    // resume it calls later is the try's own.
    this.#relay = new Relay(this, this.relayRoute)
    return this.#relay.headers(statusCode, rawHeaders, resume)
  }

  /** The answer's status is one errors.intercept names: the gateway answers with its own page. */
  intercept (status: number, headers: ResponseHeaders): void {
    const attempt = this.#attempt!
    this.#settle()
    // Its body is not read: the try is cut, and not taken for a client abort (settled).
    attempt.abandon()
    attempt.abortTry?.(new GatewayError('FST_UPSTREAM_INTERCEPTED', `status ${status} is answered by the gateway (errors.intercept)`))
    this.events.intercepted(this, status, headers)
  }

  /**
   * 103 Early Hints go on to the client, so a browser can start fetching what their `Link`
   * fields name while the service works (as nginx's early_hints). HTTP/1.0 clients get none;
   * a hint Node finds invalid is dropped rather than breaking the answer.
   */
  onEarlyHints (rawHeaders: Buffer[]): void {
    const raw = this.reply.raw
    if (raw.headersSent || this.request.raw.httpVersion === '1.0') return
    const fields: Record<string, string | string[]> = {}
    const links: string[] = []
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toString('latin1').toLowerCase()
      const value = rawHeaders[i + 1]!.toString('latin1')
      // Node wants each link-value on its own; a field may list several, comma-separated.
      if (name === 'link') links.push(...value.split(/,\s*(?=<)/))
      else fields[name] = value
    }
    if (links.length === 0) return
    try {
      raw.writeEarlyHints({ ...endToEnd(fields), link: links } as Record<string, string | string[]>)
    } catch {}
  }

  onAttemptData (chunk: Buffer): boolean {
    return this.#relay!.data(chunk)
  }

  onAttemptEnd (attempt: Attempt): void {
    this.#endSpan(attempt, attempt.status)
    this.#settle()
    this.#relay!.complete()
    if (this.attempts.length > 1) this.events.recovered(this, attempt.status!)
    else this.events.completed(this, attempt.status!)
  }

  onAttemptError (attempt: Attempt, err: unknown): void {
    if (this.settled) return
    const progress: Progress = { connected: attempt.connected, requestSent: attempt.requestSent, responseStarted: attempt.responseStarted }
    const verdict = classify(err, progress)
    if (this.tracing !== null) this.#endSpan(attempt, null, { error: verdict.error, phase: verdict.phase, cause: verdict.cause, err })
    if (verdict.error === 'client_aborted') {
      this.#aborted(verdict.phase)
      return
    }
    const record = attempt.record(verdict.error, verdict.cause, verdict.phase)
    if (verdict.error === 'http_request_error' && !attempt.responseStarted) {
      // The client's fault, not the target's: no failure counts against it, and no retry.
      this.attempts.push(record)
      if (err instanceof BodyTooLarge) this.#refuseBody(`passed ${err.limit} bytes while it streamed to ${attempt.target.hostPort}, so that upstream request was cut`)
      else this.#clientTooSlow((err as Error).message)
      return
    }
    // A try whose body broke was recorded when its headers came: that record now tells the end.
    if (attempt.responseStarted) this.attempts[this.attempts.length - 1] = record
    else this.attempts.push(record)
    this.pool.recordFailure(attempt.target, verdict.error, verdict.cause)
    if (attempt.responseStarted) {
      // The client already has the upstream's status; the record says so rather than the 502
      // or 504 it would have got had the failure come before the headers.
      const failure = this.#failure(verdict.error, { phase: verdict.phase, cause: verdict.cause, status: attempt.status!, receivedStatus: attempt.status! })
      this.#settle()
      this.events.broken(this, failure)
      return
    }
    const { phase, cause } = verdict
    if ((err as { code?: unknown }).code === GATEWAY_CODES.totalTimeout) {
      this.#fail(verdict.error, { phase, cause })
      return
    }
    // A target that could not even be connected to is not tried again in this exchange.
    if (conditionOf(verdict.error, phase) === 'connect-failure') this.#candidates!.unreachable(attempt.target)
    const next = afterFailure({
      error: verdict.error,
      phase: verdict.phase,
      method: this.request.method,
      policy: this.route.retry,
      retries: this.#retries,
      replayable: this.#body?.replayable ?? false,
      unreplayableWhy: this.#body?.why ?? ''
    }, () => this.#hasAnotherTry(), this.pool.budget)
    if (!next.retry) {
      this.#fail(verdict.error, { phase, cause, note: next.note })
      return
    }
    this.#retryLater(next.free)
  }

  #hasAnotherTry (): boolean {
    return this.#candidates!.hasAnother()
  }

  /** The next try after a backoff, or on the next turn of the event loop when `immediate`. */
  #retryLater (immediate = false): void {
    this.#retries++
    this.#tryAfter(immediate ? 0 : backoff(this.#retries), 'connect')
  }

  #tryAfter (ms: number, phase: AttemptRecord['phase']): void {
    this.#attempt = null
    this.#waitingPhase = phase
    const timer = setTimeout(() => {
      this.#waiting = null
      if (!this.settled) this.#tryNext()
    }, ms)
    this.#waiting = { cancel: () => clearTimeout(timer) }
  }

  /**
   * An upstream 401 to a request that carried the pool's token. The first in an exchange has
   * the token refreshed (see Credentials.unauthorized, which bounds how often), and the request
   * is sent again with the new one when the retry rules allow a replay: its method is in
   * retry.methods and its body could be kept. That is not a retry: retry.retries and the
   * budget are untouched. A second 401 goes to the client as sent.
   */
  #replayUnauthorized (): boolean {
    const credentials = this.pool.credentials
    if (credentials === null || !credentials.hasToken || this.#reauthorized) return false
    this.#reauthorized = true
    const refreshed = credentials.unauthorized(this.#sentToken)
    return refreshed && this.route.retry.methods.has(this.request.method) && this.#body!.replayable
  }

  /** Out of targets for a retry: the last try's failure stands. */
  #giveUp (why: string): void {
    const last = [...this.attempts].reverse().find((a) => a.error !== null)
    if (last === undefined) {
      this.#failOutage()
      return
    }
    this.#fail(last.error!, { phase: last.phase, cause: last.cause, note: `not retried: ${why}` })
  }

  /**
   * The client's own fault, with the status the classifier gives it: never retried, never
   * counted against a target. The connection closes after the answer.
   */
  #refuseClient (code: string, why: string): void {
    const { error, status, detail } = classifyClientFault(code)
    closeConnectionAfter(this.reply)
    this.#fail(error, { phase: 'send', status, detail, why })
  }

  /** The body is over routes[].bodyLimit. */
  #refuseBody (what: string): void {
    this.#refuseClient(GATEWAY_CODES.bodyTooLarge, `The body ${what}; the limit for routes with prefix "${this.route.prefix}" is ${this.route.bodyLimit} bytes (routes[].bodyLimit). Raise it, or set it to false, for this route if such bodies are expected.`)
  }

  /**
   * A body Fastify does not hand over: it runs no content-type parser for GET or HEAD.
   * Elasticsearch's `GET _search` and its kind carry one; it goes as sent.
   */
  #unparsedBody (): IncomingMessage | null {
    const raw = this.request.raw
    return hasBody(raw) && !raw.readableDidRead ? raw : null
  }

  /** The client announced a body and has not sent all of it yet. */
  #clientStillSending (): boolean {
    const raw = this.request.raw
    return hasBody(raw) && !raw.complete
  }

  /**
   * The client stalled mid-upload (timeouts.body) or was still sending when timeouts.total
   * passed; nginx's client_body_timeout answers the same. A slow upload is not the upstream's
   * failure. `why` names the timer, in operator words.
   */
  #clientTooSlow (why: string): void {
    this.#refuseClient(GATEWAY_CODES.clientBodyTimeout, why)
  }

  #failWith (err: unknown, progress: Progress, phase?: AttemptRecord['phase']): void {
    const verdict = classify(err, progress)
    if (verdict.error === 'client_aborted') {
      this.#aborted(phase ?? verdict.phase)
      return
    }
    this.#fail(verdict.error, { phase: phase ?? verdict.phase, cause: verdict.cause })
  }

  /** The client went away: nothing to answer, one info line. */
  #aborted (phase: string): void {
    this.#settle()
    this.events.aborted(this, phase)
  }

  /** No target to try: why (destination_unavailable, or the DNS failure of a pool with none yet). */
  #failOutage (): void {
    const outage = this.pool.outage()
    this.#fail(outage.error, outage.context)
  }

  #fail (error: ProxyErrorType, context: FailureDetails): void {
    const failure = this.#failure(error, context)
    this.#settle()
    // The rest of an unfinished upload is not read: the connection closes after the answer (as
    // nginx does) instead of draining a body nobody wants, or stalling on one held back.
    if (this.#clientStillSending()) closeConnectionAfter(this.reply)
    if (this.tracing !== null) this.tracing.requestFailed(this.#traceParent!, failure)
    this.events.failed(this, failure)
  }

  #failure (error: ProxyErrorType, context: FailureDetails): Failure {
    // Object.assign, not `{ ...context, more }`: on Node 20 a spread followed by more
    // properties is an order of magnitude slower, and this runs on every failure.
    return makeFailure(error, Object.assign({
      pool: this.pool.name,
      target: this.target?.hostPort ?? null,
      attempts: this.attempts,
      ms: this.ms,
      queueMs: this.#room.waitedMs,
      timeouts: this.route.timeouts,
      healthPath: this.pool.config.health?.path ?? null
    }, context))
  }

  #settle (): void {
    this.settled = true
    // A try still open as the exchange ends (left behind by a timeout or an intercepted status).
    if (this.tracing !== null) this.#endSpan(this.#attempt, this.#attempt?.status ?? null)
    if (this.#totalTimer !== null) clearTimeout(this.#totalTimer)
    this.#totalTimer = null
    this.#upload?.stop()
    this.#upload = null
    this.#waiting?.cancel()
    this.#waiting = null
  }

  /** The client side gave up on the response (its body stream was destroyed). */
  cancel (reason: Error | undefined): void {
    this.abort(new GatewayError(GATEWAY_CODES.clientAborted, reason?.message ?? 'aborted'))
  }
}
