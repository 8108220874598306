// Sends the gateway's own answer for a failure: negotiated body, Proxy-Status, no-store, the
// request id and Retry-After. Everything here reads the failure record; nothing re-decides.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { ServerHttp2Stream } from 'node:http2'
import type { ErrorsConfig } from '../options/config.js'
import type { Failure } from './failure.js'
import { buildProblem, isFullExposure, proxyStatusMember, type Problem } from './problem.js'
import { appendList, isGrpc } from '../proxy/forwarding.js'
import { renderHtml } from './html.js'
import { encodeGrpcMessage, grpcMessage, grpcStatusOf } from './grpc.js'

export interface ResponderSettings {
  errors: ErrorsConfig
  requestIdHeader: string
}

export function sendFailure (request: FastifyRequest, reply: FastifyReply, failure: Failure, settings: ResponderSettings): void {
  if (reply.sent || reply.raw.headersSent) return
  const full = isFullExposure(settings.errors, request)
  const answer = failureAnswer(request, failure, settings, full, reply.getHeader('proxy-status') as string | undefined)
  const { headers, body } = answer
  const stream = (reply.raw as { stream?: ServerHttp2Stream }).stream
  if (stream !== undefined && headers['grpc-status'] !== undefined) {
    // Trailers-only: one HEADERS frame that ends the stream. Through Node's compatibility
    // response the headers would go without END_STREAM, and a gRPC client that sees the
    // stream end without it reports "Call ended without gRPC status" instead of ours.
    reply.hijack()
    if (!stream.destroyed && !stream.headersSent) stream.respond({ ':status': 200, ...headers }, { endStream: true })
    return
  }
  // Headers the upstream may have set on this reply do not belong to the gateway's answer.
  reply.removeHeader('content-length')
  const { status } = answer
  reply.code(status)
  reply.headers(headers)
  reply.send(body)
}

/**
 * What the gateway answers for a failure: its headers and negotiated body (none for HEAD).
 * `proxyStatus` is a Proxy-Status already on the answer (the upstream's), kept in front of ours.
 */
export function failureAnswer (request: FastifyRequest, failure: Failure, settings: ResponderSettings, full: boolean, proxyStatus?: string): { headers: Record<string, string>, body: string | undefined, status: number } {
  if (isGrpc(request.headers['content-type'])) return grpcAnswer(request, failure, settings, full, proxyStatus)
  const problem = buildProblem(failure, request, settings.errors, full)
  const { type, body, html } = render(problem, request, settings, full)
  const headers: Record<string, string> = {
    'content-type': type,
    'proxy-status': appendList(proxyStatus, proxyStatusMember(failure, settings.errors.proxyName, full, null)),
    'cache-control': 'no-store',
    // The body may reflect the request's URL: no browser may sniff it into another type.
    'x-content-type-options': 'nosniff',
    [settings.requestIdHeader]: String(request.id)
  }
  if (html === true) headers['content-security-policy'] = PAGE_POLICY
  if (failure.retryAfter !== null) headers['retry-after'] = String(Math.ceil(failure.retryAfter))
  return { headers, body: request.method === 'HEAD' ? undefined : body, status: failure.status }
}

/**
 * A gRPC client's answer: HTTP 200 and trailers-only (no body: the headers end the stream),
 * `grpc-status` from the failure record and `grpc-message` in the gateway's words, with the
 * headers every failure carries. Never a page: a gRPC client would read it as a broken message.
 */
function grpcAnswer (request: FastifyRequest, failure: Failure, settings: ResponderSettings, full: boolean, proxyStatus?: string): { headers: Record<string, string>, body: string | undefined, status: number } {
  const headers: Record<string, string> = {
    'content-type': 'application/grpc',
    'grpc-status': String(grpcStatusOf(failure)),
    'grpc-message': encodeGrpcMessage(grpcMessage(failure, full)),
    'proxy-status': appendList(proxyStatus, proxyStatusMember(failure, settings.errors.proxyName, full, null)),
    'cache-control': 'no-store',
    [settings.requestIdHeader]: String(request.id)
  }
  if (failure.retryAfter !== null) headers['retry-after'] = String(Math.ceil(failure.retryAfter))
  return { headers, body: undefined, status: 200 }
}

/** A Retry-After value in seconds (a plugin's on the reply, or the upstream's); null when it is none. */
export function retryAfterOf (value: unknown): number | null {
  const seconds = Number(value)
  return Number.isFinite(seconds) && seconds > 0 ? seconds : null
}

/**
 * The gateway's own page has inline CSS and nothing else (its favicon is an empty data: URL):
 * should an escape ever fail, a reflected value still could not run, load or frame anything.
 * A page from `errors.render` is the app's own, with its own assets: it gets no policy.
 */
const PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type Format = 'problem' | 'html' | 'text'

function render (problem: Problem, request: FastifyRequest, settings: ResponderSettings, full: boolean): { type: string, body: string, html?: boolean } {
  const format = negotiate(request.headers.accept)
  if (settings.errors.render !== null) {
    const custom = settings.errors.render(problem, request)
    if (typeof custom === 'string') return { type: format === 'html' ? 'text/html; charset=utf-8' : 'text/plain; charset=utf-8', body: custom }
    if (Buffer.isBuffer(custom)) return { type: 'application/octet-stream', body: custom.toString() }
    return { type: 'application/problem+json; charset=utf-8', body: JSON.stringify(custom) }
  }
  if (format === 'problem') return { type: 'application/problem+json; charset=utf-8', body: JSON.stringify(problem) }
  if (format === 'html') {
    const { proxyName, contact } = settings.errors
    return { type: 'text/html; charset=utf-8', body: renderHtml(problem, { proxyName, full, contact }), html: true }
  }
  return { type: 'text/plain; charset=utf-8', body: renderText(problem) }
}

/** problem+json for JSON clients, HTML for browsers, text for everyone else (curl). */
export function negotiate (accept: string | undefined): Format {
  if (accept === undefined || accept === '') return 'text'
  let best: Format = 'text'
  let bestQ = 0
  for (const part of accept.split(',')) {
    const [range, ...params] = part.trim().toLowerCase().split(';')
    const qParam = params.find((p) => p.trim().startsWith('q='))
    const q = qParam !== undefined ? Number(qParam.trim().slice(2)) : 1
    const format: Format | null = range === 'application/problem+json' || range === 'application/json' || range === 'application/*'
      ? 'problem'
      : range === 'text/html' ? 'html' : range === 'text/plain' || range === 'text/*' ? 'text' : null
    if (format !== null && q > bestQ) {
      best = format
      bestQ = q
    }
  }
  return best
}

function renderText (problem: Problem): string {
  const lines = [
    `${problem.status} ${problem.title}`,
    '',
    problem.detail,
    '',
    `What to do: ${problem.hint}`,
    '',
    `error: ${problem.error} (blame: ${problem.blame}, phase: ${problem.phase})`
  ]
  if (problem.target !== undefined) {
    lines.push(`pool: ${problem.pool ?? '-'}  target: ${problem.target ?? '-'}  cause: ${problem.cause ?? '-'}`)
    for (const a of problem.attempts ?? []) {
      const outcome = [a.error ?? `status ${a.status ?? '?'}`, a.cause].filter((part) => part !== null).join(' ')
      lines.push(`  try ${a.target}: ${outcome} in ${a.phase} after ${a.ms} ms`)
    }
  }
  lines.push(`request id: ${problem.requestId}`, `time: ${problem.timestamp}`, '')
  return lines.join('\n')
}
