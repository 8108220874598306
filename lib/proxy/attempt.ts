// One try of an exchange on one target: undici calls it (a callback-style handler) as the
// request goes out and the answer comes back, and it keeps the try's own timers: connect,
// headers and body idle, each to the millisecond.
import type { Target } from '../pool/target.js'
import { GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import type { Exchange, LegacyHandler } from './exchange.js'
import { TargetTry } from './try.js'

/** One try on one target; undici calls it as the request progresses. */
export class Attempt extends TargetTry implements LegacyHandler {
  /** Cuts this try; undici hands it over once the request is on a socket. */
  abortTry: ((reason?: Error) => void) | null = null
  connected = false
  /** undici has written the whole request, body included, to the socket. */
  requestSent = false
  responseStarted = false
  #abandoned = false
  #ended = false
  #headersTimer: NodeJS.Timeout | null = null
  #connectTimer: NodeJS.Timeout | null = null
  #bodyTimer: NodeJS.Timeout | null = null
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

  onConnect (abort: (err?: Error) => void, context?: object): void {
    this.abortTry = abort
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer)
    this.#connectTimer = null
    if (this.#abandoned) {
      abort(new Error('abandoned by the gateway'))
      return
    }
    this.connected = true
    this.exchange.onAttemptStart(context)
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
    const abort = this.abortTry!
    this.#headersTimer = setTimeout(() => {
      abort(new GatewayError(GATEWAY_CODES.headersTimeout, `no response headers within ${ms} ms`))
    }, ms)
  }

  #clearHeadersTimer (): void {
    if (this.#headersTimer !== null) clearTimeout(this.#headersTimer)
    this.#headersTimer = null
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusMessage?: string): boolean {
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
    this.#clearHeadersTimer()
    this.#startBodyTimer()
    const go = this.exchange.onAttemptResponse(this, statusCode, rawHeaders, () => {
      this.#paused = false
      this.#bodyTimer?.refresh()
      resume()
    }, statusMessage)
    if (!go) this.#paused = true
    return go
  }

  // timeouts.body: the longest silence while the body streams. A pause the client side asked
  // for does not count: the timer goes quiet and starts over on resume (as undici's does).
  #startBodyTimer (): void {
    const ms = this.exchange.route.timeouts.body
    if (ms === false) return
    const abort = this.abortTry!
    this.#bodyTimer = setTimeout(() => {
      if (!this.#paused) abort(new GatewayError(GATEWAY_CODES.bodyTimeout, `no body data for ${ms} ms`))
    }, ms)
  }

  onData (chunk: Buffer): boolean {
    if (this.#abandoned) return false
    this.#bodyTimer?.refresh()
    const go = this.exchange.onAttemptData(chunk)
    if (!go) this.#paused = true
    return go
  }

  onComplete (trailers: string[] | null): void {
    this.#end()
    if (!this.#abandoned) this.exchange.onAttemptEnd(this, trailers)
  }

  onError (err: Error): void {
    this.#end()
    if (!this.#abandoned) this.exchange.onAttemptError(this, err)
  }

  #end (): void {
    if (this.#ended) return
    this.#ended = true
    this.#clearHeadersTimer()
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer)
    this.#connectTimer = null
    if (this.#bodyTimer !== null) clearTimeout(this.#bodyTimer)
    this.#bodyTimer = null
    this.target.inFlight--
    this.exchange.pool.released()
  }
}
