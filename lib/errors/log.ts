// The one log record of a failed request, and the one line for a client that went away.
import type { FastifyRequest } from 'fastify'
import type { Failure } from './failure.js'

export function logFailure (request: FastifyRequest, failure: Failure, note?: string): void {
  const record = {
    method: request.method,
    url: request.url,
    status: failure.status,
    error: failure.error,
    blame: failure.blame,
    phase: failure.phase,
    pool: failure.pool,
    target: failure.target,
    cause: failure.cause,
    attempts: failure.attempts,
    ms: failure.ms,
    ...(failure.queueMs > 0 ? { queueMs: failure.queueMs } : {}),
    ...(failure.note !== null ? { note: failure.note } : {})
  }
  const tries = failure.attempts.length > 1 ? ` (after ${failure.attempts.length} tries)` : ''
  const where = failure.pool !== null ? ` ${failure.pool}${failure.target !== null ? ` target ${failure.target}` : ''}:` : ''
  const notes = [failure.note, note].filter((n) => n !== null && n !== undefined).join('; ')
  const msg = `${failure.status} ${failure.error}:${where} ${failure.title.toLowerCase()}${tries}${notes !== '' ? `; ${notes}` : ''}`
  // The status the client got decides, except for a response cut after its headers (any
  // failure in the body phase, a timeouts.total cut included): that status was the upstream's
  // (often a 200), and the failure is still not the client's.
  if (failure.status >= 500 || (failure.phase === 'body' && failure.blame !== 'client')) request.log.error(record, msg)
  else request.log.warn(record, msg)
}

export function logClientAborted (request: FastifyRequest, phase: string, pool: string, target: string | null, ms: number): void {
  request.log.info({ method: request.method, url: request.url, error: 'client_aborted', blame: 'client', phase, pool, target, ms: Math.round(ms) },
    `client_aborted: the client went away during the ${phase} phase`)
}
