// Errors Fastify meets before any route runs skip every scope's error handler, and Fastify
// answers them itself in its own JSON: a URL it cannot decode (its `frameworkErrors` option),
// and HTTP that Node's parser rejects (its `clientErrorHandler` option). A plugin cannot set
// server options, so the package exports both, and the plugin leaves what they need on the
// instance. Without the plugin registered, they answer as Fastify and Node would.
import { randomUUID } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { ConnectionError, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ErrorHandlers } from './handlers.js'
import { classifyClientFault, GATEWAY_CODES } from './classify.js'
import { makeFailure } from './failure.js'
import { logFailure } from './log.js'
import { failureAnswer } from './respond.js'
import { closeConnectionAfter } from '../proxy/forwarding.js'

const kGateway = Symbol('fastify-upstream.frameworkErrors')

type Gateway = Pick<ErrorHandlers, 'errorHandler' | 'settings'>

type WithGateway = FastifyInstance & { [kGateway]?: Gateway }

/** Called by the plugin: the instance's framework and client errors answer in its format now. */
export function setFrameworkErrorHandler (app: FastifyInstance, gateway: Gateway): void {
  // The first registration of the plugin in an app answers them; later ones find it there.
  if (!app.hasDecorator(kGateway)) app.decorate(kGateway, gateway)
}

/**
 * Pass as Fastify's `frameworkErrors` option: `Fastify({ frameworkErrors })`. A URL Fastify
 * cannot decode then answers like any other client error, with its log record.
 */
export function frameworkErrors (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const gateway = (request.server as WithGateway)[kGateway]
  if (gateway !== undefined) {
    gateway.errorHandler(error, request, reply)
    return
  }
  reply.code(error.statusCode ?? 400).send(error)
}

/** Operator words for what Node's parser rejected (its status and public words are classify's). */
function parserWhy (code: string | undefined): string {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW': return 'Its header section passed Node\'s maxHeaderSize (16 KiB unless Fastify\'s maxHeaderSize or --max-http-header-size says otherwise); oversized cookies are the usual cause.'
    case 'ERR_HTTP_REQUEST_TIMEOUT': return 'The client did not finish sending it within Fastify\'s requestTimeout.'
    default: return `Node's HTTP parser rejected it${code !== undefined ? ` (${code})` : ''}.`
  }
}

/**
 * Pass as Fastify's `clientErrorHandler` option: `Fastify({ clientErrorHandler })`. Requests
 * Node's parser rejects (a header section over maxHeaderSize, a malformed line) then get the
 * gateway's answer, negotiated on what can be read of their `Accept`, and one log record.
 */
export function clientErrorHandler (this: FastifyInstance, error: ConnectionError, socket: Socket): void {
  // A reset connection has no one left to answer.
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  // The client closed its side in the middle of a request that Node had already handed on (its
  // body was streaming): that request's own path records the departure (client_aborted). A
  // second record and a 400 written behind its response would be noise: release the socket.
  // `_httpMessage` is the response Node has in progress on the socket, as its own handler checks.
  if (error.code === 'HPE_INVALID_EOF_STATE' && (socket as Socket & { _httpMessage?: unknown })._httpMessage != null) {
    socket.destroy()
    return
  }
  const { error: type, status, detail } = classifyClientFault(error.code)
  const gateway = (this as WithGateway)[kGateway]
  if (gateway === undefined || !socket.writable) {
    if (socket.writable) answerAndRelease(socket, `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
    else socket.destroy()
    return
  }
  // Node hands over the bytes its parser was reading (Fastify's type calls them something else).
  const packet: unknown = error.rawPacket
  const request = requestFromPacket(Buffer.isBuffer(packet) ? packet : undefined, this)
  const failure = makeFailure(type, { phase: 'route', status, ms: 0, cause: error.code ?? null, detail, why: parserWhy(error.code) })
  logFailure(request, failure)
  // Who may see full details is decided per request; with no request to ask, only a gateway
  // that shows everything to everyone does.
  const full = gateway.settings.errors.expose === 'full'
  const { headers, body = '', status: answered } = failureAnswer(request, failure, gateway.settings, full)
  const head = [`HTTP/1.1 ${answered} ${STATUS_CODES[answered]}`, 'connection: close', `content-length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)]
  answerAndRelease(socket, `${head.join('\r\n')}\r\n\r\n${body}`)
}

/** How long an answer may take to leave before its socket is destroyed anyway. */
const FLUSH_MS = 1000

/**
 * Sends the answer, then destroys the socket once it is written, as Node's own handler does.
 * `end()` alone only half-closes: Node's HTTP server allows half-open sockets, so a client that
 * never closes its side (or never reads) would hold the connection until some timeout.
 */
function answerAndRelease (socket: Socket, answer: string): void {
  const timer = setTimeout(() => socket.destroy(), FLUSH_MS)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
  socket.end(answer, () => socket.destroy())
}

/**
 * A request with more than one Host field is invalid (RFC 9112 §3.2: a server answers 400, as
 * nginx does): two hosts let a request mean one thing here and another behind us. Node's parser
 * keeps the first and drops the rest, so only the raw list shows it. One pass over the names.
 */
export function hasDuplicateHost (rawHeaders: readonly string[]): boolean {
  let seen = false
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    if (name.length === 4 && name.toLowerCase() === 'host') {
      if (seen) return true
      seen = true
    }
  }
  return false
}

/** Answers a duplicate Host as Node's parser would answer malformed HTTP: 400, then close. */
export function rejectDuplicateHost (request: FastifyRequest, reply: FastifyReply, gateway: Pick<ErrorHandlers, 'answer'>): void {
  const { error: type, status, detail } = classifyClientFault(GATEWAY_CODES.duplicateHost)
  closeConnectionAfter(reply)
  gateway.answer(request, reply, makeFailure(type, {
    phase: 'route',
    status,
    ms: reply.elapsedTime,
    cause: GATEWAY_CODES.duplicateHost,
    detail,
    why: 'It carried more than one Host field (RFC 9112 §3.2); it was not forwarded.'
  }))
}

/**
 * What the rejected bytes tell of the request, for the answer and the log: its method and
 * target (the first line, if it got that far) and its Accept. It never reached Fastify, so the
 * request id is made here.
 */
function requestFromPacket (packet: Buffer | undefined, app: FastifyInstance): FastifyRequest {
  const text = packet?.toString('latin1') ?? ''
  const line = /^([A-Z]+) (\S{1,2048})/.exec(text)
  // Lines may end in a bare LF: that is often why the parser refused the request.
  const accept = /\naccept:[ \t]*([^\r\n]*)/i.exec(text)?.[1]
  const id = randomUUID()
  return {
    id,
    method: line?.[1] ?? '-',
    url: line?.[2] ?? '-',
    headers: accept !== undefined ? { accept } : {},
    log: app.log.child({ reqId: id })
  } as unknown as FastifyRequest
}
