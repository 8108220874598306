// The failure record: built once per failed request from the classifier's verdict and the
// exchange's context, frozen, and then only read — by the response body, Proxy-Status, the log
// record, counters and the dashboard.
import { TAXONOMY, type Blame, type Phase, type ProxyErrorType, type Sent } from './taxonomy.js'
import type { Timeouts } from '../options/config.js'
import { GATEWAY_CODES, RELAY_LIMITS } from './codes.js'
import type { AttemptRecord } from './shapes.js'

export type { AttemptRecord }

export interface Failure {
  readonly error: ProxyErrorType
  readonly status: number
  readonly title: string
  /** Public words: what happened, nothing internal. */
  readonly detail: string
  /** Operator words: what to do, naming targets and options (full exposure only). */
  readonly hint: string
  readonly blame: Blame
  readonly phase: Phase
  readonly temporary: boolean
  readonly sent: Sent
  readonly cause: string | null
  readonly pool: string | null
  /** `host:port` of the target of the last try. */
  readonly target: string | null
  readonly attempts: readonly AttemptRecord[]
  /** Milliseconds from the request's arrival to the failure. */
  readonly ms: number
  /** Seconds, when a wait is known. */
  readonly retryAfter: number | null
  /** The upstream's status, when the gateway replaces an upstream answer. */
  readonly receivedStatus: number | null
  /** Why no (further) retry was made, when that matters: "not retried: the retry budget is spent …". */
  readonly note: string | null
  /** Milliseconds spent waiting for room (limits.maxConcurrent). */
  readonly queueMs: number
}

export interface FailureContext {
  phase: Phase
  cause?: string | null
  pool?: string | null
  target?: string | null
  attempts?: readonly AttemptRecord[]
  ms: number
  /** The timeouts in force for this request (for hints that name them). */
  timeouts?: Timeouts | null
  /** A status other than the taxonomy's (a Fastify 4xx is `http_request_error` with its own). */
  status?: number
  retryAfter?: number | null
  receivedStatus?: number | null
  /** Extra operator words: per-target reasons, what the budget did, the request's problem. */
  why?: string
  /** The pool's active health check path, if it has one (hints differ with and without). */
  healthPath?: string | null
  note?: string | undefined
  queueMs?: number
  /** Overrides the public detail (e.g. Fastify's message for a client error). */
  detail?: string
  /** Overrides the taxonomy's `temporary` (a failed token call is; other internal errors are not). */
  temporary?: boolean
}

export function makeFailure (error: ProxyErrorType, ctx: FailureContext): Failure {
  const kind = TAXONOMY[error]
  const status = ctx.status ?? kind.status
  return Object.freeze({
    error,
    status,
    title: error === 'http_request_error' ? statusTitle(status) : kind.title,
    detail: ctx.detail ?? kind.detail,
    hint: hintFor(error, ctx),
    blame: kind.blame,
    phase: ctx.phase,
    temporary: ctx.temporary ?? kind.temporary,
    sent: kind.sent,
    cause: ctx.cause ?? null,
    pool: ctx.pool ?? null,
    target: ctx.target ?? null,
    attempts: Object.freeze([...(ctx.attempts ?? [])]),
    ms: Math.round(ctx.ms),
    retryAfter: ctx.retryAfter ?? null,
    receivedStatus: ctx.receivedStatus ?? null,
    note: ctx.note ?? null,
    queueMs: Math.round(ctx.queueMs ?? 0)
  })
}

function hintFor (error: ProxyErrorType, ctx: FailureContext): string {
  const target = ctx.target ?? 'the target'
  const pool = ctx.pool !== null && ctx.pool !== undefined ? `pool "${ctx.pool}"` : 'the pool'
  const code = ctx.cause !== null && ctx.cause !== undefined ? ` (${ctx.cause})` : ''
  const t = ctx.timeouts
  const tries = (ctx.attempts?.length ?? 0) > 1 ? ` after ${ctx.attempts!.length} tries` : ''
  const extra = ctx.why !== undefined ? ` ${ctx.why}` : ''
  // One switch, so only the words for this failure are built.
  const hint = ((): string => {
    switch (error) {
      case 'dns_error': return `${hostOf(target)} does not resolve${code}. Check the name in ${pool} and the resolver this host uses.`
      case 'dns_timeout': return `Looking up ${hostOf(target)} failed for now${code}. Check that the resolver answers; the gateway will try again.`
      case 'connection_refused': return `Nothing is listening on ${target}${tries}. Check that the service is running and bound to the right port; ${ctx.healthPath !== undefined && ctx.healthPath !== null
        ? `if it is restarting, health checks (health.path ${ctx.healthPath}) will take it out of rotation.`
        : `set health.path on ${pool} so a target that stops listening is taken out of rotation before requests reach it.`}`
      case 'destination_ip_unroutable': return `No route to ${target}${code}. Check the address, the network and any firewall between the gateway and the service.`
      case 'connection_timeout': return `${target} did not accept a connection within ${t?.connect ?? '?'} ms (timeouts.connect)${tries}. The host may be down, overloaded, or dropping packets; raise timeouts.connect only if connections are known to be slow.`
      case 'tls_protocol_error': return `The TLS handshake with ${target} failed${code}. Check that the target speaks TLS on that port (http vs https in the target URL) and that the protocol versions and ciphers match.`
      case 'tls_certificate_error': return `${target} presented a certificate the gateway rejects${code}. Give the issuing CA in tls.ca, fix the name with tls.servername, or renew the certificate; tls.rejectUnauthorized is true.`
      case 'connection_terminated': return `${target} closed the connection before answering${code}. The service may have crashed or restarted, or closed an idle keep-alive connection; if the latter, set connections.keepAlive below the service's own keep-alive timeout.`
      case 'http_response_timeout': return ctx.phase === 'headers' && ctx.cause === 'UND_ERR_HEADERS_TIMEOUT'
        ? `${target} sent no response headers within ${t?.headers ?? '?'} ms (timeouts.headers). Look for slow queries or saturated workers there; if slow answers are expected, raise timeouts.headers for this route.`
        : `The whole exchange took longer than ${t?.total ?? '?'} ms (timeouts.total)${tries}; the last try was in the ${ctx.phase} phase on ${target}. Raise timeouts.total for this route if that is expected.`
      case 'http_protocol_error': return `${target} answered with something that is not valid HTTP/1.1${code}. Check that the port is an HTTP server (not TLS, gRPC or another protocol) and that it writes well-formed headers.`
      case 'http_response_header_section_size': return `${target} sent response headers larger than the gateway accepts (16 KiB). Look for oversized cookies or debug headers in that service.`
      case 'connection_read_timeout': return `${target} stopped sending the response body for ${t?.body ?? '?'} ms (timeouts.body). The client's connection was cut so it sees a truncated answer. Look for stalls in that service; raise timeouts.body for streaming routes.`
      case 'connection_write_timeout': return `${target} took no part of the request body for ${t?.body ?? '?'} ms (timeouts.body) while the client had more to send. The service may be stuck or not reading uploads; raise timeouts.body for this route if it legitimately pauses while reading.`
      case 'http_response_incomplete': return `The connection to ${target} was lost while its body streamed${code}. The client's connection was cut so it sees a truncated answer. Look for crashes or proxies killing long responses there.`
      case 'destination_unavailable': return `Every target of ${pool} is out of rotation.${extra}`
      case 'connection_limit_reached': return `${pool} is at its limits (limits.maxConcurrent or connections.perTarget per target, limits.maxPending queued, limits.queueTimeout).${extra}`
      case 'proxy_loop_detected': return `The request already carried this gateway instance's Via pseudonym, so it came back: a target of ${pool} routes back to this gateway. Check the targets' URLs and any load balancer in between.`
      case 'destination_not_found': return `No route or target matches this request.${extra}`
      case 'proxy_internal_error': return ctx.cause !== null && ctx.cause !== undefined && RELAY_LIMITS.has(ctx.cause) && ctx.cause !== GATEWAY_CODES.relayFailed
        ? `${target}'s answer could not be relayed.${extra}`
        : ctx.cause === GATEWAY_CODES.credentials
          ? `${extra.trim()} Requests to ${pool} need a token and get this answer while none can be had; auth.token is called again on the next request (at most once a second while it fails).`
          : `The gateway failed unexpectedly${code}. This is a bug or an unexpected state; the log record has the error.${extra}`
      case 'http_request_error': return `The gateway rejected the client's request.${extra}`
      case 'http_request_denied': return `The client exceeded the rate limit (rateLimit option).${extra}`
      case 'rate_limit_store_unavailable': return `The rate limit store (rateLimit.redis) failed${code}, and rateLimit.onStoreError is "deny", so rate-limited requests are refused until it answers again. Check that Redis is up and reachable from the gateway; set onStoreError "allow" to let requests through unlimited while it is down.`
      case 'upstream_error_status': return `${target} answered ${ctx.receivedStatus ?? '?'}; its body was replaced because errors.intercept lists that status. The service's own log has the reason (match it with the request id).`
    }
  })()
  return ctx.note !== undefined ? `${hint} (${capitalize(ctx.note)}.)` : hint
}

function capitalize (text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1)
}

function hostOf (target: string): string {
  const colon = target.lastIndexOf(':')
  return colon > 0 ? target.slice(0, colon) : target
}

function statusTitle (status: number): string {
  const titles: Record<number, string> = {
    400: 'Bad request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not found',
    405: 'Method not allowed',
    406: 'Not acceptable',
    408: 'Request timeout',
    411: 'Length required',
    413: 'Request body too large',
    414: 'URL too long',
    415: 'Unsupported media type',
    431: 'Request headers too large'
  }
  return titles[status] ?? 'Bad request'
}
