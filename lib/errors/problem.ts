// RFC 9457 problem details and the RFC 9209 Proxy-Status member, both built from the one
// failure record. `expose` decides how much an audience may see.
import type { FastifyRequest } from 'fastify'
import type { ErrorsConfig } from '../options/config.js'
import type { Failure } from './failure.js'
import type { Problem } from './shapes.js'
import { serializeItem, Token, type Parameters } from 'structured-headers'
import { PROXY_STATUS_ERROR } from './taxonomy.js'

export type { Problem }

export function isFullExposure (errors: ErrorsConfig, request: FastifyRequest): boolean {
  const expose = errors.expose
  return typeof expose === 'function' ? expose(request) === true : expose === 'full'
}

export function buildProblem (failure: Failure, request: FastifyRequest, errors: ErrorsConfig, full: boolean): Problem {
  const problem: Problem = {
    type: errors.typeBase + failure.error,
    title: failure.title,
    status: failure.status,
    detail: clip(failure.detail),
    instance: clip(request.url),
    error: failure.error,
    blame: failure.blame,
    phase: failure.phase,
    requestId: String(request.id),
    timestamp: new Date().toISOString(),
    temporary: failure.temporary,
    hint: full ? failure.hint : publicHint(failure, errors)
  }
  if (full) {
    problem.pool = failure.pool
    problem.target = failure.target
    problem.cause = failure.cause
    problem.attempts = failure.attempts
  }
  return problem
}

/**
 * The longest reflected value (the URL, Fastify's words about it) a page repeats. Node lets a
 * URL be as long as maxHeaderSize allows; an error page need not echo all of it.
 */
const MAX_REFLECTED = 2048

function clip (text: string): string {
  return text.length > MAX_REFLECTED ? `${text.slice(0, MAX_REFLECTED)}…` : text
}

function publicHint (failure: Failure, errors: ErrorsConfig): string {
  const contact = errors.contact !== null ? ` (${errors.contact})` : ''
  if (failure.blame === 'client') return failure.temporary ? 'Wait a moment, then send the request again.' : 'Check the request and send it again.'
  return failure.temporary
    ? `Try again in a few moments. If it keeps failing, tell the site's operators${contact} and quote the request id.`
    : `This will not fix itself by retrying. Tell the site's operators${contact} and quote the request id.`
}

/**
 * Our Proxy-Status member (RFC 9209 §2), appended after any the upstream sent. Serialized by
 * structured-headers (RFC 9651), so a value can never break the field: quotes and backslashes
 * are escaped and each parameter written in canonical form (`name;error=x;details="..."`).
 */
export function proxyStatusMember (failure: Failure | null, proxyName: string, full: boolean, receivedStatus: number | null): string {
  const params: Parameters = new Map()
  if (failure !== null) {
    // An intercepted upstream status is not a failure of ours: no `error` parameter.
    const mapped = PROXY_STATUS_ERROR[failure.error]
    const error = mapped === undefined ? failure.error : mapped
    if (error !== null) params.set('error', new Token(error))
    const details = full ? `${failure.phase} ${failure.cause ?? failure.error}${failure.note !== null ? `; ${failure.note}` : ''}` : failure.title
    params.set('details', printable(details))
    if (full && failure.target !== null) params.set('next-hop', printable(failure.target))
  }
  const received = failure?.receivedStatus ?? receivedStatus
  if (received !== null) params.set('received-status', received)
  // proxyName is validated as an sf-token with the options.
  return serializeItem([new Token(proxyName), params])
}

/** An sf-string holds printable ASCII only (RFC 9651 §3.3.3): anything else becomes `?`. */
function printable (value: string): string {
  return value.replace(/[^\x20-\x7e]/g, '?')
}
