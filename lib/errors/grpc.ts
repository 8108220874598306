// The gRPC form of the gateway's answer to a failure: one more renderer of the failure record,
// beside problem+json, HTML and text. A gRPC client reads no body on an error: it reads
// `grpc-status` and `grpc-message`, so the answer is HTTP 200, trailers-only (the headers end
// the stream), in the gateway's words.
import { makeFailure, type Failure } from './failure.js'
import { GATEWAY_CODES } from './classify.js'

/** gRPC status codes the gateway answers with (grpc/doc/statuscodes.md). */
export const GRPC = {
  OK: 0,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16
} as const

export const GRPC_NAMES: Readonly<Record<number, string>> = {
  0: 'OK',
  1: 'CANCELLED',
  2: 'UNKNOWN',
  3: 'INVALID_ARGUMENT',
  4: 'DEADLINE_EXCEEDED',
  5: 'NOT_FOUND',
  6: 'ALREADY_EXISTS',
  7: 'PERMISSION_DENIED',
  8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION',
  10: 'ABORTED',
  11: 'OUT_OF_RANGE',
  12: 'UNIMPLEMENTED',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
  15: 'DATA_LOSS',
  16: 'UNAUTHENTICATED'
}

/** A gRPC call is routed to a pool that speaks HTTP/1.1 (routes.ts): a configuration error. */
export const GRPC_OVER_HTTP1 = 'FST_UPSTREAM_GRPC_OVER_HTTP1'

/** The gRPC status a failure is answered with. */
export function grpcStatusOf (failure: Pick<Failure, 'error' | 'cause' | 'status' | 'receivedStatus'>): number {
  if (failure.cause === GRPC_OVER_HTTP1) return GRPC.UNIMPLEMENTED
  if (failure.cause === GATEWAY_CODES.credentials) return GRPC.UNAUTHENTICATED
  switch (failure.error) {
    case 'dns_error': case 'dns_timeout': case 'connection_refused': case 'destination_ip_unroutable':
    case 'connection_timeout': case 'tls_protocol_error': case 'tls_certificate_error':
    case 'connection_terminated': case 'destination_unavailable': case 'http_response_incomplete':
    case 'rate_limit_store_unavailable':
      return GRPC.UNAVAILABLE
    case 'http_response_timeout': case 'connection_read_timeout': case 'connection_write_timeout':
      return GRPC.DEADLINE_EXCEEDED
    case 'connection_limit_reached': case 'http_request_denied':
      return GRPC.RESOURCE_EXHAUSTED
    case 'http_request_error':
      // No route for the call's path: gRPC's word for a method no server has.
      return failure.status === 404 ? GRPC.UNIMPLEMENTED : GRPC.INVALID_ARGUMENT
    case 'destination_not_found':
      return GRPC.UNIMPLEMENTED
    case 'upstream_error_status':
      return fromHttpStatus(failure.receivedStatus ?? failure.status)
    default:
      return GRPC.INTERNAL
  }
}

/** gRPC's mapping of an HTTP status a server answered instead of a gRPC one (grpc/doc/http-grpc-status-mapping.md). */
export function fromHttpStatus (status: number): number {
  switch (status) {
    case 400: return GRPC.INTERNAL
    case 401: return GRPC.UNAUTHENTICATED
    case 403: return GRPC.PERMISSION_DENIED
    case 404: return GRPC.UNIMPLEMENTED
    case 429: case 502: case 503: case 504: return GRPC.UNAVAILABLE
    default: return GRPC.UNKNOWN
  }
}

/** `grpc-message` is percent-encoded: UTF-8 bytes outside printable ASCII, and `%` itself. */
export function encodeGrpcMessage (text: string): string {
  let out = ''
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/** The words of `grpc-message`: the title, and the hint under full exposure. */
export function grpcMessage (failure: Pick<Failure, 'title' | 'hint'>, full: boolean): string {
  return full ? `${failure.title}: ${failure.hint}` : failure.title
}

/** The trailers that end a gRPC answer cut after it began: its status in the gateway's words. */
export function grpcTrailers (failure: Failure, full: boolean): Record<string, string> {
  return { 'grpc-status': String(grpcStatusOf(failure)), 'grpc-message': encodeGrpcMessage(grpcMessage(failure, full)) }
}

/**
 * A gRPC call on a route whose pool speaks HTTP/1.1: gRPC needs HTTP/2 to the target, so it
 * is answered UNIMPLEMENTED (a route with `grpc: true` is refused at registration instead).
 */
export function grpcOverHttp1 (pool: string, ms: number): Failure {
  return makeFailure('proxy_internal_error', {
    phase: 'route',
    pool,
    ms,
    cause: GRPC_OVER_HTTP1,
    detail: 'This service cannot take gRPC calls through the gateway.',
    mismatch: `This is a gRPC call, and pool "${pool}" speaks HTTP/1.1 to its targets (protocol 'http1'); gRPC needs HTTP/2 on both hops: set protocol: 'h2c' (or 'h2' for TLS targets) on pool "${pool}", and grpc: true on the route to have this checked at registration.`
  })
}
