// The one log record of a failed request, and the one line for a client that went away.
import type { FastifyRequest } from 'fastify'
import type { AttemptRecord, Failure } from './failure.js'

/**
 * `cut`: the response had started (its status was the upstream's, often a 200) when the failure
 * came, so the client connection was cut. That is still an upstream failure, logged at error
 * whatever the status said.
 */
export function logFailure (request: FastifyRequest, failure: Failure, cut = false): void {
  const note = cut ? 'the response had started, so the client connection was cut' : undefined
  const record = failureRecord(request, failure, failure.status)
  const tries = failure.attempts.length > 1 ? ` (after ${failure.attempts.length} tries)` : ''
  const where = whereOf(failure)
  const notes = [failure.note, note].filter((n) => n !== null && n !== undefined).join('; ')
  const msg = `${failure.status} ${failure.error}:${where} ${failure.title.toLowerCase()}${tries}${notes !== '' ? `; ${notes}` : ''}`
  // The status the client got decides, except for a response cut after its headers (`cut`,
  // or any failure in the body phase not the client's): that status was the upstream's (often
  // a 200), and the failure is still not the client's.
  if (failure.status >= 500 || cut || (failure.phase === 'body' && failure.blame !== 'client')) request.log.error(record, msg)
  else request.log.warn(record, msg)
}

/**
 * A failure answered with a stored answer (stale-if-error): one warn record, not error, since
 * the client got a good answer; it names the failure as logFailure would, and `status` is
 * the stale answer's.
 */
export function logServedStale (request: FastifyRequest, failure: Failure, status: number): void {
  const what = failure.error === 'upstream_error_status' ? `answered ${failure.receivedStatus ?? '?'}` : failure.title.toLowerCase()
  request.log.warn({ ...failureRecord(request, failure, status), servedStale: true },
    `${failure.status} ${failure.error}:${whereOf(failure)} ${what}; served a stale answer from the cache instead (stale-if-error)`)
}

/** The fields of a failure's log record; `status` is the one the client got. */
function failureRecord (request: FastifyRequest, failure: Failure, status: number): Record<string, unknown> {
  return {
    method: request.method,
    url: request.url,
    status,
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
}

/** ` pool target host:port:` for a log message, or nothing. */
function whereOf (failure: Failure): string {
  return failure.pool !== null ? ` ${failure.pool}${failure.target !== null ? ` target ${failure.target}` : ''}:` : ''
}

export function logClientAborted (request: FastifyRequest, phase: string, pool: string, target: string | null, ms: number): void {
  request.log.info({ method: request.method, url: request.url, error: 'client_aborted', blame: 'client', phase, pool, target, ms: Math.round(ms) },
    `client_aborted: the client went away during the ${phase} phase`)
}

/**
 * A request that succeeded only after a retry: one info record listing its tries, so a target
 * that keeps failing is visible before it is ejected (the failed tries are counted per target).
 */
export function logRecovered (request: FastifyRequest, pool: string, status: number, attempts: readonly AttemptRecord[], ms: number): void {
  const failed = attempts.filter((a) => a.error !== null || a.status !== status)
  const last = attempts[attempts.length - 1]!
  const earlier = failed.map((a) => `${a.target} ${a.error ?? `answered ${a.status ?? '?'}`}${a.cause !== null ? ` (${a.cause})` : ''}`).join(', ')
  request.log.info({ method: request.method, url: request.url, status, pool, target: last.target, attempts, ms: Math.round(ms), retried: true },
    `${status} after ${attempts.length} tries: ${pool} target ${last.target} answered; earlier: ${earlier}`)
}
