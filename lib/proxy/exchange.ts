// The life of one proxied request: which targets it tries, each try's progress and outcome,
// waiting for a target with room, retries under the policy and the pool's budget, the total
// timeout across tries, and how it ends (a streamed response, or one failure record).
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import type { Target } from '../pool/target.js'
import { Attempt, type AttemptOwner } from './attempt.js'
import { closeConnectionAfter, cutAnswer, isGrpc, type ResponseHeaders } from './forwarding.js'
import { formatGrpcTimeout, parseGrpcTimeout } from './grpc-deadline.js'
import { asRelayLimit, classify, relayLimitStatus, classifyClientFault, GatewayError, GATEWAY_CODES, RELAY_LIMITS, type Classified, type Progress } from '../errors/classify.js'
import { makeFailure, type AttemptRecord, type Failure } from '../errors/failure.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { watchUpload, type UploadWatch } from './upload.js'
import { retryAfterOf } from '../errors/respond.js'
import { sendTry } from './try.js'
import { BodyTooLarge } from '../errors/codes.js'
import { bodyWithoutReading, prepareBody, untouched, type PreparedBody } from './body.js'
import { shouldRetryStatus } from './retry.js'
import { TrySequence, type FailureDetails, type Replay } from './tries.js'
import type { Tracing, TryOutcome } from '../observe/tracing.js'
import { Relay, relayInterim, type RelayExchange, type RelayRoute } from './relay.js'

const kExchange = Symbol('fastify-upstream.exchange')
type ExchangeResponse = ServerResponse & { [kExchange]?: Exchange }

/** The exchange relaying into this response, if one is (see routes.ts: the error handler). */
export function exchangeOf (res: ServerResponse): Exchange | undefined {
  return (res as ExchangeResponse)[kExchange]
}

function onResponseClose (this: ExchangeResponse): void {
  this[kExchange]!.onResponseClose()
}

/** One function for every exchange's total timer (setTimeout hands it the exchange). */
function onTotalTimeout (exchange: Exchange): void {
  exchange.onTotalTimeout()
}

/** Whether the client's request has a body, by its framing. */
function hasBody (raw: IncomingMessage): boolean {
  // HTTP/2 frames a body by its stream, not its fields (gRPC sends no Content-Length): there is
  // one unless the client's HEADERS frame ended the stream.
  const stream = (raw as { stream?: { endAfterHeaders?: boolean } }).stream
  if (stream !== undefined) return stream.endAfterHeaders === false
  const length = raw.headers['content-length']
  return (length !== undefined && length !== '0') || raw.headers['transfer-encoding'] !== undefined
}

/**
 * A route cache's part in an exchange (lib/cache): it sees the upstream's answer before the
 * relay does, and its body as it streams.
 */
export interface ExchangeCache {
  /**
   * The answer the client would get. 'relay': it goes on as usual; 'revalidated': the cache
   * answered with its stored answer (a 304 confirmed it); 'stale': the cache answered a 5xx with
   * a stale answer, and reported that failure itself.
   */
  response: (exchange: Exchange, status: number, headers: IncomingHttpHeaders) => 'relay' | 'revalidated' | 'stale'
  data: (chunk: Buffer) => void
  /** The answer was delivered whole. */
  end: () => void
  /** The exchange is over (after end(), or without it: nothing of an unfinished answer is kept). */
  settled: () => void
  /** The exchange failed without an answer: true when the cache answered instead (stale-if-error). */
  failed: (exchange: Exchange, failure: Failure) => boolean
}

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

export class Exchange extends TrySequence<Attempt> implements AttemptOwner, RelayExchange {
  /** The upstream request-target (routes.ts maps the client's path through rewritePrefix). */
  #path = ''
  /** The request headers every try sends; each sets its own Host (and credentials) in place. */
  #headers: Record<string, string> | null = null
  #body: PreparedBody | null = null
  /** The answer on its way to the client, once a try has one to deliver. */
  #relay: Relay | null = null
  #totalTimer: NodeJS.Timeout | null = null
  /** A gRPC call's deadline (performance.now()), when its grpc-timeout comes before timeouts.total. */
  #deadlineAt: number | null = null
  /** Watches the client's upload for a stall (timeouts.body); null without a body to watch. */
  #upload: UploadWatch | null = null
  /** The context the try spans hang from; null when tracing is off. */
  readonly #traceParent: object | null
  /** Told once the body is ready to send, after the first try went (routes[].mirror's copy). */
  onBodyReady: ((body: PreparedBody) => void) | null = null
  /** The route's cache, on a caching route. */
  cache: ExchangeCache | null = null

  constructor (
    request: FastifyRequest,
    readonly reply: FastifyReply,
    route: RouteConfig,
    pool: UpstreamPool,
    private readonly events: ExchangeEvents,
    private readonly relayRoute: RelayRoute,
    private readonly tracing: Tracing | null = null
  ) {
    super(request, route, pool, 'request')
    this.#traceParent = tracing?.requestContext(request) ?? null
    const { total, body } = route.timeouts
    const deadline = isGrpc(request.headers['content-type']) ? parseGrpcTimeout(request.headers['grpc-timeout']) : null
    if (deadline !== null && (total === false || deadline < total)) {
      this.#deadlineAt = performance.now() + deadline
      this.#totalTimer = setTimeout(onTotalTimeout, deadline, this)
    } else if (total !== false) {
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
        sending: () => this.current?.connected === true
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

  /** timeouts.total passed: the client was still uploading, or the exchange took too long. */
  onTotalTimeout (): void {
    if (this.#deadlineAt !== null) {
      this.abort(new GatewayError(GATEWAY_CODES.grpcDeadline, 'the gRPC call\'s deadline (grpc-timeout) passed'))
      return
    }
    const total = this.route.timeouts.total as number
    this.abort(this.#clientStillSending()
      ? new GatewayError(GATEWAY_CODES.clientBodyTimeout, `The client had not sent its whole body when timeouts.total (${total} ms) passed. Raise timeouts.total for this route if uploads this slow are expected.`)
      : new GatewayError(GATEWAY_CODES.totalTimeout, `timeouts.total (${total} ms) passed`))
  }

  /**
   * Sends the request upstream: `path` is the request-target, `headers` this exchange's own copy
   * (forwarding.ts), `body` the client's body stream when Fastify handed one over.
   */
  start (path: string, headers: Record<string, string>, body: Readable | undefined): void {
    this.#path = path
    this.#headers = headers
    const limit = this.route.bodyLimit
    if (limit !== null && headers['content-length'] !== undefined && Number(headers['content-length']) > limit) {
      this.#refuseBody(`declares ${headers['content-length']} bytes (Content-Length)`)
      return
    }
    if (!this.plan()) return
    const sent = body ?? this.#unparsedBody()
    const ready = bodyWithoutReading(sent)
    if (ready !== null) {
      this.#body = ready
      this.tryNext()
      this.onBodyReady?.(ready)
      return
    }
    prepareBody(sent, headers['content-length'], limit, isGrpc(headers['content-type'])).then((body) => {
      this.#body = body
      if (this.settled) return
      this.tryNext()
      this.onBodyReady?.(body)
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
    const attempt = this.current
    if (this.betweenTries || attempt === null) {
      // Between tries (queued, backing off, reading the body): nothing is in flight to cut.
      this.stopWaiting()
      if (reason.code === GATEWAY_CODES.clientBodyTimeout) {
        this.#clientTooSlow(reason.message)
        return
      }
      this.#failWith(reason, { connected: attempt?.connected ?? false, requestSent: false, responseStarted: false }, this.waitingPhase)
    } else if (attempt.cuttable) {
      attempt.cut(reason)
    } else {
      // Still connecting: undici gives no handle yet, so leave the try behind and end now.
      attempt.abandon()
      this.onAttemptError(attempt, reason)
    }
  }

  /** One try on `target`: the headers object is this exchange's own, so its Host is set in place. */
  protected sendTo (target: Target): void {
    const body = this.#body!.body
    const attempt = new Attempt(this, target, body instanceof Readable ? body : null)
    this.current = attempt
    const headers = this.#headers!
    headers.host = this.hostFor(target)
    this.applyCredentials(headers)
    if (this.tracing === null) {
      this.#send(attempt, headers)
      return
    }
    attempt.span = this.tracing.startTry(this.#traceParent!, this.pool.name, target.hostPort, this.tries)
    this.tracing.sendWithin(this.#traceParent!, attempt.span, headers, () => { this.#send(attempt, headers) })
  }

  protected replay (): Replay {
    const body = this.#body
    return { method: this.request.method, replayable: body === null ? false : body.replayable || untouched(body), why: body?.why ?? '' }
  }

  #send (attempt: Attempt, headers: Record<string, string>): void {
    // The target hears what is left of the call's deadline, not what the client first gave.
    if (this.#deadlineAt !== null) headers['grpc-timeout'] = formatGrpcTimeout(this.#deadlineAt - performance.now())
    sendTry(attempt, attempt, this.route.timeouts, { path: this.#path, method: this.request.method as Dispatcher.HttpMethod, headers, body: this.#body!.body }, (err) => {
      this.onAttemptError(attempt, err)
    })
  }

  /** A try's answer the client will not see (another try follows): its span ends, its body is not read. */
  #dropAnswer (attempt: Attempt, status: number, why: string): void {
    this.#endSpan(attempt, status)
    attempt.drop(new GatewayError(GATEWAY_CODES.retried, why))
  }

  /** Ends the client's answer with these trailers rather than a cut (relay.ts, endWith). */
  endAnswerWith (trailers: Record<string, string>): boolean {
    return this.#relay?.endWith(trailers) ?? false
  }

  get timeouts (): RouteConfig['timeouts'] {
    return this.route.timeouts
  }

  /** A try ended or was left behind: its target has room again. */
  released (): void {
    this.pool.released()
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

  onAttemptResponse (attempt: Attempt, statusCode: number, headers: IncomingHttpHeaders): boolean {
    attempt.status = statusCode
    this.pool.recordResponse(attempt.target, statusCode, attempt.ms)
    this.attempts.push(attempt.record(null, null, 'headers'))
    if (statusCode === 401 && this.replayUnauthorized()) {
      // The upstream refused the gateway's token: the client never sees this answer.
      this.#dropAnswer(attempt, statusCode, 'sending again with a new token after 401')
      this.tryAfter(0, 'send')
      return false
    }
    const policy = this.route.retry
    if (shouldRetryStatus(statusCode, this.request.method, policy, this.retries, this.#body!.replayable) && this.hasAnotherTry() && this.pool.budget.tryRetry()) {
      // This answer is dropped for another try: the client never sees it.
      this.#dropAnswer(attempt, statusCode, `retrying after status ${statusCode}`)
      this.retryLater()
      return false
    }
    if (this.cache !== null) {
      const cached = this.cache.response(this, statusCode, headers)
      if (cached !== 'relay') {
        this.#answeredFromCache(attempt, cached === 'revalidated')
        return false
      }
    }
    const relay = new Relay(this, this.relayRoute)
    this.#relay = relay
    // A throw (an answer the gateway cannot relay, Node refusing a header) reaches relayFailed.
    const outcome = relay.headers(statusCode, headers)
    if (outcome === 'complete') {
      // No body follows (HEAD, 204, 304): the answer is whole. What undici makes of the rest of
      // the message (a 304 with a Content-Length makes it cut the connection) is its business:
      // the try is left behind, and its end only frees the target's slot.
      attempt.abandon()
      this.cache?.end()
      this.#delivered(attempt)
      return false
    }
    // Backpressure passes straight through: false pauses the try until the relay resumes it.
    return outcome === 'body'
  }

  /**
   * The record of an upstream answer the gateway does not pass on as it is (an intercepted
   * status, a 5xx answered from the cache): not a failure of the gateway's, its status the upstream's.
   */
  statusFailure (status: number, headers: { 'retry-after'?: string | string[] }): Failure {
    return this.#failure('upstream_error_status', { phase: 'headers', status, receivedStatus: status, retryAfter: retryAfterOf(headers['retry-after']) })
  }

  /** The answer's status is one errors.intercept names: the gateway answers with its own page. */
  intercept (status: number, headers: ResponseHeaders): void {
    const attempt = this.current!
    this.#settle()
    // Its body is not read: the try is cut, and not taken for a client abort (settled).
    attempt.drop(new GatewayError(GATEWAY_CODES.intercepted, `status ${status} is answered by the gateway (errors.intercept)`))
    this.events.intercepted(this, status, headers)
  }

  /** 102 and 103 go on to the client where its connection can carry them (relay.ts). */
  onAttemptInterim (_attempt: Attempt, status: number, headers: IncomingHttpHeaders): void {
    if (!this.settled) relayInterim(this.reply, status, headers)
  }

  onAttemptData (chunk: Buffer): boolean {
    this.cache?.data(chunk)
    return this.#relay!.data(chunk)
  }

  resumeTry (): void {
    this.current?.resume()
  }

  onAttemptEnd (attempt: Attempt, trailers: IncomingHttpHeaders): void {
    this.#relay!.complete(trailers)
    this.cache?.end()
    this.#delivered(attempt)
  }

  /**
   * The cache answered instead of the upstream (its stored answer, confirmed by a 304 or standing
   * in for a 5xx): the try's answer is not read. `delivered`: count it as the upstream's answer.
   */
  #answeredFromCache (attempt: Attempt, delivered: boolean): void {
    attempt.drop(new GatewayError('FST_UPSTREAM_CACHED', 'answered from the cache'))
    if (delivered) {
      this.#delivered(attempt)
      return
    }
    this.#endSpan(attempt, attempt.status)
    this.#settle()
  }

  /** The answer is the client's: the exchange ends as a success. */
  #delivered (attempt: Attempt): void {
    this.#endSpan(attempt, attempt.status)
    this.#settle()
    if (this.attempts.length > 1) this.events.recovered(this, attempt.status!)
    else this.events.completed(this, attempt.status!)
  }

  /**
   * Relay work failed on its own: relay.ts runs what it puts off inside a guard, the try hands
   * over whatever its handling of undici's news threw, and the route's error handler what
   * Fastify caught while sending the answer (Node refusing a header, an app's onSend hook).
   * `answerable`: the reply may still carry the gateway's answer (nothing of the upstream's is
   * on its way); otherwise the client's connection is cut. Logged once, either way.
   */
  relayFailed (err: unknown, answerable = this.#relay?.sending !== true): void {
    try {
      const attempt = this.current
      if (!this.settled && attempt !== null) {
        this.#relayFailedOn(attempt, err, answerable)
        return
      }
      if (this.reply.raw.destroyed) return
      // The exchange had ended (a delivered answer) when sending it failed.
      const status = this.reply.statusCode
      const failure = this.#failure('proxy_internal_error', { phase: 'body', cause: GATEWAY_CODES.relayFailed, why: relayFailureWords(err), ...(answerable && !this.reply.raw.headersSent ? {} : { status, receivedStatus: status }) })
      if (answerable && !this.reply.raw.headersSent) {
        this.#relay?.discard()
        this.events.failed(this, failure)
      } else {
        this.events.broken(this, failure)
      }
    } catch (again) {
      // Even answering failed (Node refusing the gateway's own answer, a hook throwing): the
      // connection is cut, and the failure logged unless an answer's record already was.
      if (!this.settled) this.request.log.error({ err: again, pool: this.pool.name, error: 'proxy_internal_error', cause: GATEWAY_CODES.relayFailed }, `proxy_internal_error: relaying the answer failed: ${relayFailureWords(err)}`)
      this.#settle()
      cutAnswer(this.reply)
    }
  }

  /** The try's answer cannot be relayed: a limit of the gateway's, or relay work that threw. */
  #relayFailedOn (attempt: Attempt, err: unknown, answerable: boolean): void {
    const limit = err instanceof GatewayError && RELAY_LIMITS.has(err.code) ? err : new GatewayError(GATEWAY_CODES.relayFailed, relayFailureWords(err), { cause: err })
    // The rest of the answer is not wanted: the try is left behind, and cut.
    attempt.drop(limit)
    // The phase is where the client's answer had got to: nothing of it sent is `headers`.
    const verdict = classify(limit, { connected: true, requestSent: true, responseStarted: !answerable })
    this.#gatewayLimit(attempt, verdict, limit, answerable)
  }

  /**
   * A try that ended on the gateway's own limit (RELAY_LIMITS) or failure: never counted against
   * the target, never retried (the target would answer the same). Answered when nothing of the
   * upstream's answer has gone to the client; otherwise its connection is cut.
   */
  #gatewayLimit (attempt: Attempt, verdict: Classified, err: Error, answerable: boolean): void {
    const error = verdict.error as ProxyErrorType
    const record = attempt.record(error, verdict.cause, verdict.phase)
    if (attempt.responseStarted) this.attempts[this.attempts.length - 1] = record
    else this.attempts.push(record)
    const status = relayLimitStatus(verdict.cause)
    const why = err.message
    if (!answerable || this.reply.raw.headersSent) {
      const failure = this.#failure(error, { phase: verdict.phase, cause: verdict.cause, why, status: attempt.status ?? undefined, receivedStatus: attempt.status })
      this.#settle()
      this.events.broken(this, failure)
      return
    }
    this.#relay?.discard()
    this.#fail(error, { phase: verdict.phase, cause: verdict.cause, why, ...(status !== undefined ? { status } : {}) })
  }

  onAttemptError (attempt: Attempt, failed: unknown): void {
    if (this.settled) return
    const err = attempt.responseStarted ? failed : asRelayLimit(failed)
    const progress: Progress = { connected: attempt.connected, requestSent: attempt.requestSent, responseStarted: attempt.responseStarted }
    const verdict = classify(err, progress)
    if (this.tracing !== null) this.#endSpan(attempt, null, { error: verdict.error, phase: verdict.phase, cause: verdict.cause, err })
    if (verdict.error === 'client_aborted') {
      this.#aborted(verdict.phase)
      return
    }
    if (verdict.error === 'proxy_internal_error') {
      this.#gatewayLimit(attempt, verdict, err instanceof Error ? err : new Error(String(err)), this.#relay?.sending !== true)
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
    if (attempt.responseStarted) {
      this.pool.recordFailure(attempt.target, verdict.error, verdict.cause)
      // The client already has the upstream's status; the record says so rather than the 502
      // or 504 it would have got had the failure come before the headers.
      const failure = this.#failure(verdict.error, { phase: verdict.phase, cause: verdict.cause, status: attempt.status!, receivedStatus: attempt.status! })
      this.#settle()
      this.events.broken(this, failure)
      return
    }
    const code = (err as { code?: unknown }).code
    if (code === GATEWAY_CODES.totalTimeout || code === GATEWAY_CODES.grpcDeadline) {
      this.pool.recordFailure(attempt.target, verdict.error, verdict.cause)
      this.#fail(verdict.error, { phase: verdict.phase, cause: verdict.cause })
      return
    }
    this.failedTry(attempt, verdict)
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

  protected failWith (error: ProxyErrorType, context: FailureDetails): void {
    this.#fail(error, context)
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
      queueMs: this.queueMs,
      timeouts: this.route.timeouts,
      healthPath: this.pool.config.health?.path ?? null
    }, context))
  }

  #settle (): void {
    this.settled = true
    this.cache?.settled()
    // A try still open as the exchange ends (left behind by a timeout or an intercepted status).
    if (this.tracing !== null) this.#endSpan(this.current, this.current?.status ?? null)
    if (this.#totalTimer !== null) clearTimeout(this.#totalTimer)
    this.#totalTimer = null
    this.#upload?.stop()
    this.#upload = null
    this.stopWaiting()
  }

  /** The client side gave up on the response (its body stream was destroyed). */
  cancel (reason: Error | undefined): void {
    this.abort(new GatewayError(GATEWAY_CODES.clientAborted, reason?.message ?? 'aborted'))
  }
}

/** Operator words for relay work that threw. */
function relayFailureWords (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  const message = err instanceof Error ? err.message : String(err)
  return `Relaying the answer failed${typeof code === 'string' ? ` (${code})` : ''}: ${message}`
}
