// Every error the gateway makes, and every code it gives one: the codes failed exchanges carry
// (read by classify.ts like any system or undici code), the error classes, and the errors of
// options and of app.upstream. A leaf: it imports only the taxonomy.
import { CLIENT_FAULTS } from './taxonomy.js'

/** An error the gateway made, with its code, read by the classifier like any other. */
export class GatewayError extends Error {
  constructor (readonly code: string, message: string, options?: ErrorOptions) { super(message, options) }
}

/** Gateway-made errors carry one of these codes so the classifier can read them like any other. */
export const GATEWAY_CODES = {
  totalTimeout: 'FST_UPSTREAM_TOTAL_TIMEOUT',
  // A gRPC call's own deadline (its client's grpc-timeout) passed: a total timeout of the call's.
  grpcDeadline: 'FST_UPSTREAM_GRPC_DEADLINE',
  // The gateway enforces timeouts.headers itself (undici's timer ticks every ~0.5 s); it is the
  // same event as undici's own, so it carries undici's code.
  headersTimeout: 'UND_ERR_HEADERS_TIMEOUT',
  connectTimeout: 'UND_ERR_CONNECT_TIMEOUT',
  bodyTimeout: 'UND_ERR_BODY_TIMEOUT',
  // A status line undici parsed but HTTP has no such status (under 100, over 599): llhttp's
  // own name for it, so it classifies as any other malformed answer.
  invalidStatus: 'HPE_INVALID_STATUS',
  clientAborted: 'FST_UPSTREAM_CLIENT_ABORTED',
  // The client's streamed body passed routes[].bodyLimit: its fault, whatever the upstream did.
  bodyTooLarge: 'FST_UPSTREAM_BODY_TOO_LARGE',
  // The client stalled mid-upload (timeouts.body), or was still sending when timeouts.total
  // passed: its delay, not the upstream's.
  clientBodyTimeout: 'FST_UPSTREAM_CLIENT_BODY_TIMEOUT',
  // The upstream took no part of the request body for timeouts.body while the client had more
  // to give (nginx's proxy_send_timeout).
  sendTimeout: 'FST_UPSTREAM_SEND_TIMEOUT',
  // More than one Host field (RFC 9112 §3.2), which Node's parser lets through.
  duplicateHost: 'FST_UPSTREAM_DUPLICATE_HOST',
  // An upgrade request that goes on as plain HTTP with a chunked body (proxy/upgrade-body.ts).
  lengthRequired: 'FST_UPSTREAM_LENGTH_REQUIRED',
  // A path an upstream could resolve outside the route's rewritePrefix (proxy/path.ts).
  unsafePath: 'FST_UPSTREAM_UNSAFE_PATH',
  // pools.<name>.auth.token gave no usable token: nothing was sent to the upstream.
  credentials: 'FST_UPSTREAM_CREDENTIALS',
  // The rate limit store failed or was too slow, and rateLimit.onStoreError is 'deny'.
  rateLimitStore: 'FST_UPSTREAM_RATE_LIMIT_STORE',
  // What the gateway cannot relay, although the target's answer is valid HTTP: the gateway's
  // limits, never counted against the target (see RELAY_LIMITS).
  // A transfer coding other than chunked (`Transfer-Encoding: gzip, chunked`).
  transferCoding: 'FST_UPSTREAM_TRANSFER_CODING',
  // An interim 100 Continue the gateway did not ask for: HTTP lets a server send one (RFC 9110
  // §15.2), undici's HTTP/1.1 client refuses it.
  unsolicitedContinue: 'FST_UPSTREAM_UNSOLICITED_100',
  // Relay work threw (Node refused a header, an app's hook or stream failed): a gateway bug or
  // an unexpected state, caught so it ends one exchange, never the process.
  relayFailed: 'FST_UPSTREAM_RELAY_FAILED',
  // A route's rewriteRequestHeaders or rewriteResponseHeaders threw or returned no headers: the
  // app's code (the gateway's configuration) failed, never the target.
  rewriteFailed: 'FST_UPSTREAM_REWRITE_FAILED',
  // A try the exchange let go of: it is retried elsewhere, or the gateway answers its status
  // itself (errors.intercept). Never a failure of the target.
  retried: 'FST_UPSTREAM_RETRIED',
  intercepted: 'FST_UPSTREAM_INTERCEPTED'
} as const

/**
 * Answers the gateway cannot relay although they are valid HTTP: its own limits, classified as
 * `proxy_internal_error`, never retried (the target would answer the same), never counted
 * toward the target's ejection; the hint is the error's own words.
 */
export const RELAY_LIMITS: ReadonlySet<string> = new Set([GATEWAY_CODES.transferCoding, GATEWAY_CODES.unsolicitedContinue, GATEWAY_CODES.relayFailed, GATEWAY_CODES.rewriteFailed])

/** An option is wrong: names its path, what was expected and what was given. */
export class OptionsError extends Error {
  readonly code = 'FST_UPSTREAM_INVALID_OPTION'
  constructor (readonly path: string, message: string) {
    super(`${path}: ${message}`)
    this.name = 'OptionsError'
  }
}

/** The client sent more than routes[].bodyLimit allows. */
export class BodyTooLarge extends Error {
  readonly code = GATEWAY_CODES.bodyTooLarge
  constructor (readonly limit: number) {
    super(`the request body passed ${limit} bytes`)
  }
}

/** A path the gateway refuses to forward: a client fault (classifyClientFault gives its status). */
export class UnsafePathError extends Error {
  readonly code = GATEWAY_CODES.unsafePath
  readonly statusCode = CLIENT_FAULTS.unsafePath.status
}

/** A failed lookup, with the resolver's code (`ENOTFOUND`, `ESERVFAIL`, `ETIMEOUT`...). */
export class LookupError extends Error {
  constructor (readonly code: string, message: string) { super(message) }
}

/** Codes of the errors `app.upstream` throws for names that are not configured. */
export const API_CODES = {
  unknownPool: 'FST_UPSTREAM_UNKNOWN_POOL',
  unknownTarget: 'FST_UPSTREAM_UNKNOWN_TARGET',
  unknownCachingRoute: 'FST_UPSTREAM_UNKNOWN_CACHING_ROUTE'
} as const

/** `app.upstream.*` was given a pool name that is not configured. */
export function unknownPool (name: string, pools: readonly string[]): GatewayError {
  return new GatewayError(API_CODES.unknownPool, `fastify-upstream: no pool named "${name}" (pools: ${pools.join(', ')})`)
}

/** A pool was asked for a target it does not have. */
export function unknownTarget (pool: string, url: string, targets: readonly string[]): GatewayError {
  return new GatewayError(API_CODES.unknownTarget, `fastify-upstream: pool "${pool}" has no target "${url}" (targets: ${targets.join(', ')})`)
}

/** `app.upstream.purge` was given a prefix that is not a caching route. */
export function unknownCachingRoute (route: string, caching: readonly string[]): GatewayError {
  return new GatewayError(API_CODES.unknownCachingRoute, `fastify-upstream: no caching route with prefix "${route}" (caching routes: ${caching.join(', ') || 'none'}; routes[].cache turns caching on)`)
}

/** Whether `err` says a pool or target name is not configured (the caller's mistake). */
export function isUnknownName (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === API_CODES.unknownPool || code === API_CODES.unknownTarget
}
