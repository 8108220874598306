// Should a failed try be tried again? Pure decisions, from the failure's type (docs/errors.md's
// "sent?" column: could the upstream have acted on the request?) and the retry policy.
import type { RetryConfig } from '../options/config.js'
import type { RetryCondition } from '../options/types.js'
import { TAXONOMY, type Phase, type ProxyErrorType } from '../errors/taxonomy.js'
import { REFUSED_STREAM } from '../errors/classify.js'

/** Full-jitter backoff between tries (as in AWS's and Envoy's): random in [0, min(cap, base·2ⁿ)). */
export const BACKOFF_BASE_MS = 25
export const BACKOFF_CAP_MS = 250

export function backoff (retry: number, random: () => number = Math.random): number {
  return random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, retry - 1))
}

/** Which `retry.on` condition a failure falls under, if any. */
export function conditionOf (error: ProxyErrorType, phase: Phase): RetryCondition | null {
  switch (error) {
    case 'connection_refused': case 'connection_timeout': case 'destination_ip_unroutable':
    case 'dns_error': case 'dns_timeout': case 'tls_protocol_error': case 'tls_certificate_error':
      return 'connect-failure'
    case 'connection_terminated':
      // HTTP/1.1 has no REFUSED_STREAM; its nearest is a connection closed while the request
      // was still going out (the upstream did not take it).
      return phase === 'send' ? 'refused-stream' : 'reset'
    case 'http_response_timeout': case 'connection_write_timeout':
      return 'timeout'
    default:
      return null
  }
}

/**
 * Failures the upstream never saw: nothing listened, or nothing was reached. A retry on another
 * target then adds no load anywhere a failure could have come from, so it takes nothing from the
 * retry budget and waits no backoff (as nginx's proxy_next_upstream moves on at once). Without
 * this, two dead targets of three (one may stay in rotation under outlier.maxEjectedPercent)
 * spent the budget and turned about 30% of requests into 502s while a healthy target idled.
 */
export function isFreeRetry (error: ProxyErrorType): boolean {
  return error === 'connection_refused' || error === 'destination_ip_unroutable' || error === 'dns_error'
}

export type RetryVerdict = { retry: true } | { retry: false, why: string }

export interface RetryQuestion {
  error: ProxyErrorType
  phase: Phase
  /** The failure's cause: `REFUSED_STREAM` marks a stream an HTTP/2 target did no work on. */
  cause?: string | null
  method: string
  policy: RetryConfig
  /** Retries already made. */
  retries: number
  /** The request body can be sent again. */
  replayable: boolean
  /** Why it cannot, in words ("a streamed body of more than 64 KiB"). */
  unreplayableWhy: string
}

export function shouldRetryFailure (q: RetryQuestion): RetryVerdict {
  if (q.retries >= q.policy.retries) return { retry: false, why: q.policy.retries === 0 ? 'retries are off (retry.retries = 0)' : `all ${q.policy.retries} retries (retry.retries) were used` }
  const condition = conditionOf(q.error, q.phase)
  if (condition === null) return { retry: false, why: `${q.error} is not a failure a retry can fix` }
  if (!q.policy.on.has(condition)) return { retry: false, why: `"${condition}" is not in retry.on` }
  // A request that never reached the upstream is safe to send elsewhere, whatever its method;
  // so is a stream an HTTP/2 target refused (RFC 9113 §8.7: it did no work on it).
  if (TAXONOMY[q.error].sent !== 'no' && q.cause !== REFUSED_STREAM && !q.policy.methods.has(q.method)) {
    return { retry: false, why: `${q.method} is not in retry.methods and the upstream may have acted on it` }
  }
  if (!q.replayable) return { retry: false, why: `the request body could not be replayed (${q.unreplayableWhy})` }
  return { retry: true }
}

export type NextStep = { retry: true, free: boolean } | { retry: false, note: string | undefined }

/**
 * What follows a failed try: another one (`free` when the upstream never saw the request, see
 * isFreeRetry), or the failure stands, with a note saying why when something other than the
 * policy's own count of retries stopped it. Takes a retry from the budget when one is made.
 */
export function afterFailure (q: RetryQuestion, hasAnother: () => boolean, budget: { tryRetry: () => boolean }): NextStep {
  const verdict = shouldRetryFailure(q)
  if (!verdict.retry) return { retry: false, note: q.retries >= q.policy.retries ? undefined : `not retried: ${verdict.why}` }
  if (!hasAnother()) return { retry: false, note: 'not retried: no other target can take traffic' }
  const free = isFreeRetry(q.error)
  if (!free && !budget.tryRetry()) {
    const { ratio, minPerSecond } = q.policy.budget
    return { retry: false, note: `not retried: the retry budget is spent (retry.budget: ${ratio} of requests, at least ${minPerSecond}/s)` }
  }
  return { retry: true, free }
}

/** An upstream answer that the policy retries (`5xx` in retry.on, or a listed status). */
export function shouldRetryStatus (status: number, method: string, policy: RetryConfig, retries: number, replayable: boolean): boolean {
  const listed = policy.statuses.has(status) || (status >= 500 && policy.on.has('5xx'))
  return listed && retries < policy.retries && policy.methods.has(method) && replayable
}
