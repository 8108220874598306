// One try of an exchange on one target: undici calls it (a dispatch handler, undici's current
// controller API) as the request goes out and the answer comes back, and it keeps the try's own
// timers: connect, headers and body idle, each to the millisecond.
//
// Nothing here relies on the order undici happens to call things in beyond what its handler
// API promises: the connection may come within dispatch() or later, and the try may be left
// behind (abandoned) at any point, after which whatever undici says of it only releases it.
import { performance } from 'node:perf_hooks'
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Target } from '../pool/target.js'
import type { Timeouts } from '../options/config.js'
import { GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import { TargetTry } from './try.js'
import type { Span } from '../observe/tracing.js'

/** What a try needs of the exchange it belongs to (exchange.ts implements it). */
export interface AttemptOwner {
  readonly timeouts: Timeouts
  /** The try's interim answer (1xx): the final one follows on the same try. */
  onAttemptInterim: (attempt: Attempt, status: number, headers: IncomingHttpHeaders) => void
  /** The try's final status and headers; false pauses the try (backpressure) or it was ended. */
  onAttemptResponse: (attempt: Attempt, status: number, headers: IncomingHttpHeaders) => boolean
  /** A piece of the body; false pauses the try until `resume`. */
  onAttemptData: (chunk: Buffer) => boolean
  onAttemptEnd: (attempt: Attempt, trailers: IncomingHttpHeaders) => void
  onAttemptError: (attempt: Attempt, err: unknown) => void
  /** Something threw while the try's news was handled: the exchange ends as the gateway's failure. */
  relayFailed: (err: unknown) => void
  /** The target's slot is free again (the pool may let a waiting request in). */
  released: () => void
}

/** One try on one target; undici calls it as the request progresses. */
export class Attempt extends TargetTry implements Dispatcher.DispatchHandler {
  connected = false
  /** undici has been handed the whole request, body included. */
  requestSent = false
  responseStarted = false
  /** This try's span while it is open; null when tracing is off. */
  span: Span | null = null
  #controller: Dispatcher.DispatchController | null = null
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

  constructor (private readonly owner: AttemptOwner, target: Target, private readonly body: Readable | null) {
    super(target)
  }

  get awaitingConnection (): boolean {
    return !this.connected && !this.#ended
  }

  /** The try can be cut (undici has handed over its controller). */
  get cuttable (): boolean {
    return this.#controller !== null && !this.#ended
  }

  /** Cuts the try with `reason`: undici ends it with onResponseError (ignored once abandoned). */
  cut (reason: Error): void {
    this.#controller?.abort(reason)
  }

  /** The exchange has left this try behind: what undici says of it from now on is ignored. */
  abandon (): void {
    this.#abandoned = true
    this.#end()
  }

  /** Leaves the try behind and cuts it: its answer is not wanted (retried, intercepted). */
  drop (reason: Error): void {
    this.abandon()
    this.cut(reason)
  }

  // timeouts.connect, to the millisecond (undici's own timer ticks about once a second and
  // stays as a backstop). A try still unconnected when it fires is left behind.
  startConnectTimer (ms: number, onTimeout: () => void): void {
    if (this.connected || this.#ended) return
    this.#connectTimer = setTimeout(onTimeout, ms)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer)
    this.#connectTimer = null
    if (this.#abandoned) {
      controller.abort(new GatewayError(GATEWAY_CODES.clientAborted, 'abandoned by the gateway'))
      return
    }
    this.connected = true
    // undici's handler API says nothing of when the request has all gone out; the body does:
    // a request without one is sent with its head, a streamed one when the stream has ended.
    const body = this.body
    if (body === null || body.readableEnded) this.#requestSent()
    else body.once('end', () => { this.#requestSent() })
  }

  // timeouts.headers counts from the request sent: for a streamed body, once its last byte is
  // handed over. An upstream that answers before the body is all sent has its headers already;
  // nothing to time then.
  #requestSent (): void {
    if (this.#abandoned || this.#ended || this.responseStarted) return
    this.requestSent = true
    const ms = this.owner.timeouts.headers
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
    const { headers, body } = this.owner.timeouts
    if (!this.responseStarted) {
      this.cut(new GatewayError(GATEWAY_CODES.headersTimeout, `no response headers within ${headers as number} ms`))
      return
    }
    // A pause the client side asked for does not count: the timer stays off until resume.
    if (this.#paused || body === false) return
    const left = (body as number) - (performance.now() - this.#lastData)
    if (left >= 1) {
      this.#timer = setTimeout(onTimer, Math.ceil(left), this)
      return
    }
    this.cut(new GatewayError(GATEWAY_CODES.bodyTimeout, `no body data for ${body} ms`))
  }

  // undici calls the four methods below from its parser: a throw there would escape into the
  // socket's event handlers and end the process. Each hands anything thrown to the exchange.

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    try {
      this.#responseStart(controller, statusCode, headers)
    } catch (err) {
      this.owner.relayFailed(err)
    }
  }

  #responseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (this.#abandoned) return
    if (statusCode < 100 || statusCode > 599) {
      controller.abort(new GatewayError(GATEWAY_CODES.invalidStatus, `the upstream answered with status ${statusCode}, which HTTP does not have`))
      return
    }
    // An interim answer (102 Processing, 103 Early Hints): the final one follows on this try.
    if (statusCode < 200) {
      this.owner.onAttemptInterim(this, statusCode, headers)
      return
    }
    this.responseStarted = true
    this.#startBodyTimer()
    if (!this.owner.onAttemptResponse(this, statusCode, headers) && !this.#abandoned) this.pause()
  }

  /** The client side cannot take more for now: the try stops reading until resume(). */
  pause (): void {
    // A connection of the target is ending: undici must find no parser paused (Target.ending).
    if (this.target.ending) return
    this.#paused = true
    this.target.paused.add(this)
    this.#controller?.pause()
  }

  resume (): void {
    if (this.#ended) return
    this.#paused = false
    this.target.paused.delete(this)
    this.#lastData = performance.now()
    const body = this.owner.timeouts.body
    if (this.#timer === null && body !== false) this.#timer = setTimeout(onTimer, body, this)
    this.#controller?.resume()
  }

  // timeouts.body: the longest silence while the body streams. A pause the client side asked
  // for does not count: the timer goes quiet and starts over on resume (as undici's does).
  #startBodyTimer (): void {
    const { headers, body } = this.owner.timeouts
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

  onResponseData (_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#abandoned) return
    this.#lastData = performance.now()
    try {
      if (!this.owner.onAttemptData(chunk) && !this.#abandoned) this.pause()
    } catch (err) {
      this.owner.relayFailed(err)
    }
  }

  onResponseEnd (_controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    const abandoned = this.#abandoned
    this.#end()
    if (abandoned) return
    try {
      this.owner.onAttemptEnd(this, trailers)
    } catch (err) {
      this.owner.relayFailed(err)
    }
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    const abandoned = this.#abandoned
    this.#end()
    if (abandoned) return
    try {
      this.owner.onAttemptError(this, err)
    } catch (thrown) {
      this.owner.relayFailed(thrown)
    }
  }

  #end (): void {
    if (this.#ended) return
    this.#ended = true
    if (this.#paused) this.target.paused.delete(this)
    this.#clearTimer()
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer)
    this.#connectTimer = null
    this.target.inFlight--
    this.owner.released()
  }
}

/** One function for every try's timer (setTimeout hands it the try): no closure per try. */
function onTimer (attempt: Attempt): void {
  attempt.onTimer()
}
