// The upstream's answer on its way to the client. It goes through Fastify's reply, so the app's
// onSend and onResponse hooks, its logger and its error handling see a proxied response like any
// other. A body with a Content-Length that has all come in with its headers (the usual small
// answer) goes out as one Buffer, headers and body in one write; anything longer streams, with
// backpressure.
//
// Framing follows the upstream's, never the read boundaries: an upstream Content-Length reaches
// the client as Content-Length, a body without one goes out chunked (HTTP/1.1) or as the client's
// protocol frames it. Answers that have no body by their status or method (HEAD, 204, 304) are
// complete with their headers. Trailers go on only to a client that can take them.
//
// Relay work that runs later (the microtask that starts a stream, the flush of a streamed
// answer's headers) runs inside a guard: whatever throws there (Node refusing a header, an app's
// stream handling) ends this one exchange as a gateway failure, never the process.
import { Readable } from 'node:stream'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { acceptsTrailers, appendList, closeConnectionAfter, endToEnd, forwardResponseHeaders, type ResponseHeaders } from './forwarding.js'
import { GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import type { RewriteResponseHeaders } from '../options/types.js'
import type { UpstreamPool } from '../pool/pool.js'
import { rewriteResponse } from './rewrite.js'
import { withCookies } from '../routing/cookies.js'

/** What a route decides about every answer it relays; made once per route (routes.ts). */
export interface RelayRoute {
  /** `Via` as this gateway adds it to responses: `1.1 <proxyName>`. */
  readonly via: string
  /** The gateway answers this status itself (errors.intercept). */
  intercepts: (status: number) => boolean
  /** The Proxy-Status member of a delivered answer with this status. */
  proxyStatus: (status: number) => string
  /** Rewrites Location and Content-Location in place (`pool`: the one that answered); null when the route does not ask. */
  rewriteLocations: ((headers: ResponseHeaders, request: FastifyRequest, pool: UpstreamPool) => void) | null
  /** The route's rewriteResponseHeaders; null when it has none. */
  rewriteHeaders: RewriteResponseHeaders | null
}

/** What the relay needs of its exchange. */
export interface RelayExchange {
  readonly reply: FastifyReply
  /** The pool the answer came from. */
  readonly pool: UpstreamPool
  readonly settled: boolean
  /** The client side gave up on the body (its stream was destroyed). */
  cancel: (reason: Error | undefined) => void
  /** The gateway answers instead of the upstream (an intercepted status). */
  intercept: (status: number, headers: ResponseHeaders) => void
  /** The client can take more: the try reads on. */
  resumeTry: () => void
  /** Relay work failed on its own (a throw): the exchange ends as the gateway's failure. */
  relayFailed: (err: unknown) => void
  /** The gateway's routing cookies for an answer a target served (split, sticky); null for none. */
  routingCookies: (served: boolean) => string[] | null
}

/** Fields a trailer section may not carry (RFC 9110 §6.5.1): framing, routing, and the like. */
const NOT_TRAILERS: ReadonlySet<string> = new Set(['content-length', 'content-type', 'content-encoding', 'content-range', 'host', 'trailer', 'authorization', 'set-cookie', 'cache-control', 'expect', 'max-forwards', 'pragma', 'range'])

/**
 * Answers whose body was still coming when the read that brought their headers was parsed:
 * one microtask per batch starts them streaming.
 */
let unfinished: Relay[] = []

function streamUnfinished (): void {
  const relays = unfinished
  unfinished = []
  for (let i = 0; i < relays.length; i++) relays[i]!.guarded(startStreaming)
}

function startStreaming (relay: Relay): void {
  relay.startStreaming()
}

/**
 * A transfer coding other than chunked (`gzip, chunked`): HTTP/1.1 lets an upstream send one,
 * but the gateway passes bodies as they are, so it refuses it rather than relay coded bytes as
 * if they were not (as nginx does). undici has removed `chunked` already.
 */
function codedTransfer (value: string | string[] | undefined): string | null {
  if (value === undefined) return null
  const codings = String(value).toLowerCase().split(',').map((coding) => coding.trim()).filter((coding) => coding !== '')
  return codings.length === 1 && codings[0] === 'chunked' ? null : codings.join(', ')
}

/** One exchange's answer: undici's handler calls reach it through the exchange's try. */
export class Relay {
  /** The body as it came, while it may still all come in the read that brought the headers. */
  #chunks: Buffer[] | null = null
  #stream: BodyStream | null = null
  #paused = false
  #complete = false
  /** reply.send has been called: from here on a failure can only cut the client's connection. */
  #sending = false
  /** The upstream gave a Content-Length (a body all in hand can go as one Buffer). */
  #sized = false
  /** Trailers go on to this client (see #trailersFor). */
  #trailers = false
  /** A gRPC status the target sent in its headers (trailers-only), to go on as trailers. */
  #grpcStatus: Record<string, string | string[]> | null = null
  /** Header names the relay set on the reply: taken off again if the gateway answers instead. */
  #applied: string[] = []

  constructor (private readonly exchange: RelayExchange, private readonly route: RelayRoute) {}

  get sending (): boolean {
    return this.#sending
  }

  /**
   * The upstream's final status and headers. Returns false when the try should pause (or was
   * ended: intercepted, or an answer without a body that is complete already); `bodiless` is
   * told when the answer is complete with its headers. Throws a GatewayError for an answer the
   * gateway cannot relay.
   */
  headers (status: number, upstream: IncomingHttpHeaders): 'body' | 'complete' | 'intercepted' {
    const coding = codedTransfer(upstream['transfer-encoding'])
    if (coding !== null) {
      throw new GatewayError(GATEWAY_CODES.transferCoding, `The service sent its answer with Transfer-Encoding "${coding}"; the gateway passes bodies only as sent or chunked (as nginx does), so it cannot relay this one. Have the service send a Content-Encoding instead of a transfer coding.`)
    }
    let headers = forwardResponseHeaders(upstream, this.route.via)
    if (this.route.intercepts(status)) {
      this.exchange.intercept(status, headers)
      return 'intercepted'
    }
    const reply = this.exchange.reply
    const request = reply.request
    // The route's rewriter sees the headers after the gateway's rules and before Location
    // rewriting; nothing has gone to the client yet, so a throw becomes the gateway's 500.
    if (this.route.rewriteHeaders !== null) headers = rewriteResponse(this.route.rewriteHeaders, headers, request, status)
    const bodiless = status === 204 || status === 304 || request.method === 'HEAD'
    // RFC 9110 §8.6: no Content-Length on a 204; a 304's (or a HEAD's) is the representation's.
    if (status === 204) Reflect.deleteProperty(headers, 'content-length')
    this.#sized = headers['content-length'] !== undefined
    this.#trailers = !bodiless && this.#trailersFor(request)
    // A Trailer field promises trailers; on an answer that cannot carry them Node refuses it.
    if (!this.#trailers) Reflect.deleteProperty(headers, 'trailer')
    else this.#grpcStatus = movedGrpcStatus(headers)
    this.route.rewriteLocations?.(headers, request, this.exchange.pool)
    const cookies = this.exchange.routingCookies(true)
    if (cookies !== null) headers['set-cookie'] = withCookies(headers['set-cookie'], cookies)
    reply.code(status)
    reply.headers(headers)
    this.#applied = Object.keys(headers)
    reply.header('proxy-status', appendList(reply.getHeader('proxy-status') as string | undefined, this.route.proxyStatus(status)))
    // An HTTP/1 connection is reusable only once its request body has been read: the upstream
    // answered before the client finished sending, so this connection ends with the answer.
    if (!request.raw.complete) closeConnectionAfter(reply)
    if (bodiless) {
      this.#complete = true
      this.#send(undefined)
      return 'complete'
    }
    this.#chunks = []
    if (unfinished.length === 0) queueMicrotask(streamUnfinished)
    unfinished.push(this)
    return 'body'
  }

  /**
   * Whether this client can take trailers: HTTP/2 always; HTTP/1.1 when it said so (`TE:
   * trailers`) and the body goes chunked (it has no Content-Length). Otherwise they are dropped,
   * as nginx drops them.
   */
  #trailersFor (request: FastifyRequest): boolean {
    const raw = request.raw
    if (raw.httpVersionMajor >= 2) return true
    if (raw.httpVersion !== '1.1' || this.#sized) return false
    return acceptsTrailers(raw.headers.te)
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

  complete (trailers: IncomingHttpHeaders): void {
    this.#complete = true
    if (this.#trailers) this.#addTrailers(this.#grpcStatus === null ? trailers : { ...this.#grpcStatus, ...trailers })
    if (this.#stream !== null) {
      this.#stream.push(null)
      return
    }
    const chunks = this.#chunks
    if (chunks === null) return
    const reply = this.exchange.reply
    if (this.#sized && reply.hasHeader('content-type')) {
      this.#chunks = null
      this.#send(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks))
    } else {
      // Without a Content-Length the body goes chunked, as it came; without a Content-Type,
      // Fastify would label a Buffer application/octet-stream: a stream goes as it is.
      this.startStreaming()
      this.#stream!.push(null)
    }
  }

  #addTrailers (trailers: IncomingHttpHeaders): void {
    const kept = endToEnd(trailers) as Record<string, string | string[]>
    let any = false
    for (const name in kept) {
      if (NOT_TRAILERS.has(name)) Reflect.deleteProperty(kept, name)
      else any = true
    }
    if (any) this.exchange.reply.raw.addTrailers(kept)
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
    if (chunks.length === 0) {
      // An empty body with trailers (gRPC's trailers-only answer): HTTP/2 would end the stream
      // with its headers and lose the trailers unless the headers go out on their own first.
      if (this.#complete && this.#trailers) reply.raw.once('pipe', flushAtOnce)
      else flushHeadersUnlessBodyFollows(reply.raw, this)
    }
    this.#send(stream)
  }

  #send (payload: Buffer | Readable | undefined): void {
    this.exchange.reply.send(payload)
    // Only once send returned: had it thrown (Node refusing a header), nothing went out.
    this.#sending = true
  }

  /** Runs relay work that was put off to later, so that a throw ends this exchange only. */
  guarded (step: (relay: Relay) => void): void {
    try {
      step(this)
    } catch (err) {
      this.exchange.relayFailed(err)
    }
  }

  /** Takes the upstream's headers off the reply: the gateway answers instead (nothing was sent). */
  /**
   * Ends the answer as complete, with `trailers`, instead of cutting it: a gRPC stream cut after
   * messages flowed ends with its status in the trailers, which a gRPC client reads, where a
   * reset would say only that the stream broke. False when that cannot be: the answer went out
   * whole already, or its stream is gone.
   */
  endWith (trailers: Record<string, string>): boolean {
    if (this.#complete) return false
    if (this.#stream === null) {
      if (this.#chunks === null) return false
      this.#complete = true
      this.#trailers = false
      this.startStreaming()
    }
    const stream = this.#stream
    if (stream === null || stream.destroyed) return false
    this.#complete = true
    this.exchange.reply.raw.addTrailers(trailers)
    stream.push(null)
    return true
  }

  discard (): void {
    const reply = this.exchange.reply
    for (const name of this.#applied) reply.removeHeader(name)
    this.#applied = []
  }

  /** The stream was read: the try may go on, if it was paused. */
  read (): void {
    if (!this.#paused) return
    this.#paused = false
    this.exchange.resumeTry()
  }

  /** The stream was destroyed before its end: the client side has given up. */
  destroyed (err: Error | null): void {
    if (!this.#complete) this.exchange.cancel(err ?? undefined)
  }

  /** A streamed answer whose headers must go out now (see flushHeadersUnlessBodyFollows). */
  flush (): void {
    const res = this.exchange.reply.raw
    if (!res.headersSent && !res.destroyed) res.flushHeaders()
  }
}

/** gRPC's status fields, found in a response's headers. */
const GRPC_STATUS_FIELDS = ['grpc-status', 'grpc-message', 'grpc-status-details-bin']

/**
 * A gRPC answer that is trailers-only (its status in the one HEADERS frame that ends the
 * stream) cannot be relayed as such: Node's response sends its headers, then ends the stream
 * apart, and a gRPC client takes a status without END_STREAM for headers and then misses it.
 * The status moves to the trailers, which gRPC reads the same. Null when there is none.
 */
function movedGrpcStatus (headers: ResponseHeaders): Record<string, string | string[]> | null {
  if (headers['grpc-status'] === undefined) return null
  const moved: Record<string, string | string[]> = {}
  for (const name of GRPC_STATUS_FIELDS) {
    const value = headers[name]
    if (value === undefined) continue
    moved[name] = value
    Reflect.deleteProperty(headers, name)
  }
  return moved
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
 * An interim answer (102 Processing, 103 Early Hints) goes on to the client only where it is the
 * message the client's connection is on: Node gives a pipelined request's response its socket
 * only when the answers before it are written, and an interim answer written earlier would land
 * inside theirs. HTTP/1.0 clients get none (RFC 9110 §15.2). Early hints go on so a browser can
 * start fetching what their `Link` fields name while the service works (as nginx's early_hints).
 * A hint Node finds invalid is dropped rather than breaking the answer.
 */
export function relayInterim (reply: FastifyReply, status: number, upstream: IncomingHttpHeaders): void {
  const res = reply.raw as ServerResponse
  const raw = reply.request.raw
  if (res.headersSent || res.socket == null || raw.httpVersion === '1.0') return
  try {
    if (status === 102) {
      if (raw.httpVersionMajor < 2) res.writeProcessing()
      return
    }
    if (status !== 103) return
    const fields = endToEnd(upstream) as Record<string, string | string[]>
    const link = fields.link
    if (link === undefined) return
    // Node wants each link-value on its own; a field may list several, comma-separated.
    const links = (Array.isArray(link) ? link : [link]).flatMap((value) => value.split(/,\s*(?=<)/))
    res.writeEarlyHints({ ...fields, link: links } as Record<string, string | string[]>)
  } catch {}
}

/**
 * Response headers reach the client as soon as the upstream's do, before any body byte: an
 * EventSource or a long-poll client waits on them. Fastify writes a streamed reply's headers
 * with its first body chunk; when no chunk follows in the same turn of the event loop, they go
 * out on their own.
 */
function flushHeadersUnlessBodyFollows (res: ServerResponse, relay: Relay): void {
  // 'pipe': Fastify has set the reply's headers on `res` and starts streaming the body.
  ;(res as RelayedResponse)[kRelay] = relay
  res.once('pipe', onPipe)
}

function flushAtOnce (this: ServerResponse): void {
  if (!this.headersSent) this.flushHeaders()
}

const kRelay = Symbol('fastify-upstream.relay')
type RelayedResponse = ServerResponse & { [kRelay]?: Relay }

/**
 * The relays that started streaming in this turn of the event loop. One setImmediate looks at
 * all of them: each needs no timer and no closure of its own.
 */
let streaming: Relay[] = []

function onPipe (this: RelayedResponse): void {
  if (streaming.length === 0) setImmediate(flushStarted)
  streaming.push(this[kRelay]!)
}

function flushStarted (): void {
  const started = streaming
  streaming = []
  for (let i = 0; i < started.length; i++) started[i]!.guarded(flush)
}

function flush (relay: Relay): void {
  relay.flush()
}
