// The upstream's answer on its way to the client. It goes through Fastify's reply, so the app's
// onSend and onResponse hooks, its logger and its error handling see a proxied response like any
// other. A body that has all come in with its headers (the usual small answer) goes out as one
// Buffer, headers and body in one write; anything longer streams, with backpressure.
import { Readable } from 'node:stream'
import type { ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { appendList, closeConnectionAfter, forwardResponseHeaders, type ResponseHeaders } from './forwarding.js'

/** What a route decides about every answer it relays; made once per route (routes.ts). */
export interface RelayRoute {
  /** `Via` as this gateway adds it to responses: `1.1 <proxyName>`. */
  readonly via: string
  /** The gateway answers this status itself (errors.intercept). */
  intercepts: (status: number) => boolean
  /** The Proxy-Status member of a delivered answer with this status. */
  proxyStatus: (status: number) => string
  /** Rewrites Location and Content-Location in place; null when the route does not ask. */
  rewriteLocations: ((headers: ResponseHeaders, request: FastifyRequest) => void) | null
}

/** What the relay needs of its exchange. */
export interface RelayExchange {
  readonly reply: FastifyReply
  readonly settled: boolean
  /** The client side gave up on the body (its stream was destroyed). */
  cancel: (reason: Error | undefined) => void
  /** The gateway answers instead of the upstream (an intercepted status). */
  intercept: (status: number, headers: ResponseHeaders) => void
}

/**
 * Answers whose body was still coming when the read that brought their headers was parsed:
 * one microtask per batch starts them streaming.
 */
let unfinished: Relay[] = []

function streamUnfinished (): void {
  const relays = unfinished
  unfinished = []
  for (let i = 0; i < relays.length; i++) relays[i]!.startStreaming()
}

/** One exchange's answer: undici's handler calls reach it through the exchange's try. */
export class Relay {
  /** The body as it came, while it may still all come in the read that brought the headers. */
  #chunks: Buffer[] | null = null
  #stream: BodyStream | null = null
  #resume: (() => void) | null = null
  #paused = false
  #complete = false

  constructor (private readonly exchange: RelayExchange, private readonly route: RelayRoute) {}

  /** The upstream's final status and headers; false pauses the try (or ends it, intercepted). */
  headers (status: number, rawHeaders: Buffer[], resume: () => void): boolean {
    const headers = forwardResponseHeaders(rawHeaders, this.route.via)
    if (this.route.intercepts(status)) {
      this.exchange.intercept(status, headers)
      return false
    }
    const reply = this.exchange.reply
    this.route.rewriteLocations?.(headers, reply.request)
    reply.code(status)
    reply.headers(headers)
    reply.header('proxy-status', appendList(reply.getHeader('proxy-status') as string | undefined, this.route.proxyStatus(status)))
    // An HTTP/1 connection is reusable only once its request body has been read: the upstream
    // answered before the client finished sending, so this connection ends with the answer.
    if (!reply.request.raw.complete) closeConnectionAfter(reply)
    this.#resume = resume
    this.#chunks = []
    if (unfinished.length === 0) queueMicrotask(streamUnfinished)
    unfinished.push(this)
    return true
  }

  data (chunk: Buffer): boolean {
    const stream = this.#stream
    if (stream === null) {
      this.#chunks?.push(chunk)
      return true
    }
    if (stream.push(chunk)) return true
    this.#paused = true
    return false
  }

  complete (): void {
    this.#complete = true
    if (this.#stream !== null) {
      this.#stream.push(null)
      return
    }
    const chunks = this.#chunks
    if (chunks === null) return
    const reply = this.exchange.reply
    if (chunks.length === 0) {
      this.#chunks = null
      reply.send()
    } else if (reply.hasHeader('content-type')) {
      this.#chunks = null
      reply.send(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks))
    } else {
      // Fastify would label a Buffer application/octet-stream; a stream goes as it is.
      this.startStreaming()
      this.#stream!.push(null)
    }
  }

  /** The body goes on as a stream: it did not all come with the headers. */
  startStreaming (): void {
    const chunks = this.#chunks
    // Sent already, or streaming already.
    if (chunks === null || this.#stream !== null) return
    this.#chunks = null
    // The exchange ended before the body did (the upstream broke off, the client left).
    if (this.exchange.settled && !this.#complete) return
    const stream = new BodyStream(this)
    this.#stream = stream
    for (let i = 0; i < chunks.length; i++) stream.push(chunks[i])
    const reply = this.exchange.reply
    if (chunks.length === 0) flushHeadersUnlessBodyFollows(reply.raw)
    reply.send(stream)
  }

  /** The stream was read: the try may go on, if it was paused. */
  read (): void {
    if (!this.#paused) return
    this.#paused = false
    this.#resume!()
  }

  /** The stream was destroyed before its end: the client side has given up. */
  destroyed (err: Error | null): void {
    if (!this.#complete) this.exchange.cancel(err ?? undefined)
  }
}

class BodyStream extends Readable {
  constructor (private readonly relay: Relay) {
    super()
  }

  override _read (): void {
    this.relay.read()
  }

  override _destroy (err: Error | null, callback: (err?: Error | null) => void): void {
    this.relay.destroyed(err)
    callback(err)
  }
}

/**
 * Response headers reach the client as soon as the upstream's do, before any body byte: an
 * EventSource or a long-poll client waits on them. Fastify writes a streamed reply's headers
 * with its first body chunk; when no chunk follows in the same turn of the event loop, they go
 * out on their own.
 */
function flushHeadersUnlessBodyFollows (res: ServerResponse): void {
  // 'pipe': Fastify has set the reply's headers on `res` and starts streaming the body.
  res.once('pipe', onPipe)
}

/**
 * The responses that started streaming in this turn of the event loop. One setImmediate looks
 * at all of them: each needs no timer and no closure of its own.
 */
let streaming: ServerResponse[] = []

function onPipe (this: ServerResponse): void {
  if (streaming.length === 0) setImmediate(flushStarted)
  streaming.push(this)
}

function flushStarted (): void {
  const started = streaming
  streaming = []
  for (let i = 0; i < started.length; i++) {
    const res = started[i]!
    if (!res.headersSent && !res.destroyed) res.flushHeaders()
  }
}
