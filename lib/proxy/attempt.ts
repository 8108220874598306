// One try of an exchange on one target: undici calls it (a callback-style handler) as the
// request goes out and the answer comes back, and it keeps the try's own timers: connect,
// headers and body idle, each to the millisecond.
import { performance } from 'node:perf_hooks'
import type { Target } from '../pool/target.js'
import { GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import type { Exchange, LegacyHandler } from './exchange.js'
import { TargetTry } from './try.js'
import type { Span } from '../observe/tracing.js'

/** One try on one target; undici calls it as the request progresses. */
export class Attempt extends TargetTry implements LegacyHandler {
  /** Cuts this try; undici hands it over once the request is on a socket. */
  abortTry: ((reason?: Error) => void) | null = null
  connected = false
  /** undici has written the whole request, body included, to the socket. */
  requestSent = false
  responseStarted = false
  /** This try's span while it is open; null when tracing is off. */
  span: Span | null = null
  #abandoned = false
  #ended = false
  #connectTimer: NodeJS.Timeout | null = null
  /**
   * One timer for timeouts.headers, then timeouts.body: the headers' timer goes on as the
   * body's whenever it is due no later than the body's would be (see onTimer), so a try
   * usually sets one timer, not two.
   */
  #timer: NodeJS.Timeout | null = null
  /** When body data last came (performance.now()): timeouts.body counts the silence since. */
  #lastData = 0
  /** The client side paused the body (backpressure): silence then is not the upstream's. */
  #paused = false

  constructor (private readonly exchange: Exchange, target: Target) {
    super(target)
  }

  get awaitingConnection (): boolean {
    return !this.connected && !this.#ended
  }

  /** The exchange has left this try behind: what undici says of it from now on is ignored. */
  abandon (): void {
    this.#abandoned = true
    this.#end()
  }

  // timeouts.connect, to the millisecond (undici's own timer ticks about once a second and
  // stays as a backstop). A try still unconnected when it fires is left behind.
  startConnectTimer (ms: number, onTimeout: () => void): void {
    this.#connectTimer = setTimeout(onTimeout, ms)
  }

  onConnect (abort: (err?: Error) => void): void {
    this.abortTry = abort
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer)
    this.#connectTimer = null
    if (this.#abandoned) {
      abort(new Error('abandoned by the gateway'))
      return
    }
    this.connected = true
  }

  // timeouts.headers counts from the request sent, as undici reports it: for a streamed body,
  // once its last byte is written. (The client request's own state says nothing reliable here:
  // a GET's `complete` may still be false on a reused keep-alive connection.) An upstream that
  // answers before the body is all sent has its headers already; nothing to time then.
  onRequestSent (): void {
    if (this.#abandoned || this.#ended || this.responseStarted) return
    this.requestSent = true
    const ms = this.exchange.route.timeouts.headers
    if (ms === false) return
    this.#timer = setTimeout(onTimer, ms, this)
  }

  #clearTimer (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }

  /** The try's timer fired: headers late, or the body silent for timeouts.body. */
  onTimer (): void {
    this.#timer = null
    const { headers, body } = this.exchange.route.timeouts
    if (!this.responseStarted) {
      this.abortTry!(new GatewayError(GATEWAY_CODES.headersTimeout, `no response headers within ${headers as number} ms`))
      return
    }
    // A pause the client side asked for does not count: the timer stays off until resume.
    if (this.#paused || body === false) return
    const left = (body as number) - (performance.now() - this.#lastData)
    if (left >= 1) {
      this.#timer = setTimeout(onTimer, Math.ceil(left), this)
      return
    }
    this.abortTry!(new GatewayError(GATEWAY_CODES.bodyTimeout, `no body data for ${body} ms`))
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (this.#abandoned) return false
    if (statusCode < 100 || statusCode > 599) {
      this.abortTry!(new GatewayError(GATEWAY_CODES.invalidStatus, `the upstream answered with status ${statusCode}, which HTTP does not have`))
      return false
    }
    // An interim answer (100 Continue, 103 Early Hints): undici passes it here too, and the
    // final answer follows on the same exchange. Nothing has started yet.
    if (statusCode < 200) {
      if (statusCode === 103) this.exchange.onEarlyHints(rawHeaders)
      return true
    }
    this.responseStarted = true
    this.#startBodyTimer()
    const go = this.exchange.onAttemptResponse(this, statusCode, rawHeaders, () => {
      this.#paused = false
      this.#lastData = performance.now()
      if (this.#timer === null && this.exchange.route.timeouts.body !== false) this.#timer = setTimeout(onTimer, this.exchange.route.timeouts.body, this)
      resume()
    })
    if (!go) this.#paused = true
    return go
  }

  // timeouts.body: the longest silence while the body streams. A pause the client side asked
  // for does not count: the timer goes quiet and starts over on resume (as undici's does).
  #startBodyTimer (): void {
    const { headers, body } = this.exchange.route.timeouts
    if (body === false) {
      this.#clearTimer()
      return
    }
    this.#lastData = performance.now()
    // The headers' timer, if running, is due within `headers` ms of now: when that is no later
    // than the body's deadline, it fires first and onTimer re-arms it for the silence left.
    if (this.#timer !== null && headers !== false && headers <= body) return
    this.#clearTimer()
    this.#timer = setTimeout(onTimer, body, this)
  }

  onData (chunk: Buffer): boolean {
    if (this.#abandoned) return false
    this.#lastData = performance.now()
    const go = this.exchange.onAttemptData(chunk)
    if (!go) this.#paused = true
    return go
  }

  onComplete (): void {
    this.#end()
    if (!this.#abandoned) this.exchange.onAttemptEnd(this)
  }

  onError (err: Error): void {
    this.#end()
    if (!this.#abandoned) this.exchange.onAttemptError(this, err)
  }

  #end (): void {
    if (this.#ended) return
    this.#ended = true
    this.#clearTimer()
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer)
    this.#connectTimer = null
    this.target.inFlight--
    this.exchange.pool.released()
  }
}

/** One function for every try's timer (setTimeout hands it the try): no closure per try. */
function onTimer (attempt: Attempt): void {
  attempt.onTimer()
}
