// The one classifier: an error (undici, Node system error, our own timeouts) and where the
// exchange had got to become one RFC 9209 error type, a phase and a cause. `failure.ts` turns
// that into the immutable record every response, header, log line and counter reads.
import { CLIENT_FAULTS, CREDENTIALS_FAILURE, type ClientFault, type Phase, type ProxyErrorType } from './taxonomy.js'
import type { FailureContext } from './failure.js'
import { GATEWAY_CODES, RELAY_LIMITS, GatewayError } from './codes.js'

// The codes are read here, so they are at hand here too.
export { GATEWAY_CODES, RELAY_LIMITS, GatewayError }

export interface Classified {
  error: ProxyErrorType | 'client_aborted'
  phase: Phase
  /** The system or library code that caused it, e.g. `ECONNREFUSED`, `UND_ERR_HEADERS_TIMEOUT`. */
  cause: string | null
}

/** Where an attempt had got to when it failed. */
export interface Progress {
  /** A socket was connected and the request started to go out. */
  connected: boolean
  /** The request (and its body) had been fully handed to the socket. */
  requestSent: boolean
  /** Response headers had arrived. */
  responseStarted: boolean
}

/** Codes that name a failing certificate rather than a failing handshake. */
const CERTIFICATE_CODES = new Set([
  'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_REVOKED', 'CERT_UNTRUSTED', 'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH', 'INVALID_CA', 'PATH_LENGTH_EXCEEDED'
])

const TERMINATED_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'ECONNABORTED', 'UND_ERR_CLOSED', 'ERR_STREAM_PREMATURE_CLOSE'])

/** undici's parser errors lose their llhttp code (it is looked up by number); the class name stays. */
const PARSER_ERROR = 'HTTPParserError'

/**
 * The status of a relay limit's answer: a target's valid answer the gateway could not relay is
 * a bad gateway (502); relay work that threw keeps the taxonomy's 500.
 */
export function relayLimitStatus (cause: string | null): number | undefined {
  return cause === GATEWAY_CODES.relayFailed ? undefined : 502
}

/**
 * undici's HTTP/1.1 client ends the connection with a SocketError 'bad response' when a
 * target sends 100 Continue to a request that did not ask for it (undici 7: client-h1.js,
 * onHeadersComplete); its error has no finer code. test/relay.test.ts pins this with a real
 * target, so an undici release that changes it fails loudly rather than misleads.
 */
export function asRelayLimit (err: unknown): unknown {
  const { code, message } = (err ?? {}) as { code?: unknown, message?: unknown }
  if (code === 'UND_ERR_SOCKET' && message === 'bad response') {
    return new GatewayError(GATEWAY_CODES.unsolicitedContinue, 'The service sent an interim 100 Continue the gateway did not ask for. HTTP allows it, but the gateway\'s HTTP client (undici) refuses it, so the answer was lost. Have the service send 100 Continue only to requests with Expect: 100-continue (the gateway never forwards Expect).', { cause: err })
  }
  return err
}

/** An error the gateway raises itself (a timeout, an abort), with one of GATEWAY_CODES. */

export function classify (err: unknown, progress: Progress): Classified {
  const code = findCode(err)
  const cause = code
  const phaseAfterConnect: Phase = progress.responseStarted ? 'body' : progress.requestSent ? 'headers' : 'send'
  const at = (error: ProxyErrorType, phase: Phase): Classified => ({ error, phase, cause })

  if (code === GATEWAY_CODES.clientAborted) return { error: 'client_aborted', phase: progress.connected ? phaseAfterConnect : 'connect', cause: null }
  if (code === GATEWAY_CODES.totalTimeout) {
    return { error: 'http_response_timeout', phase: progress.connected ? phaseAfterConnect : 'connect', cause: null }
  }
  if (code === GATEWAY_CODES.bodyTooLarge || code === GATEWAY_CODES.clientBodyTimeout) return { error: 'http_request_error', phase: 'send', cause: null }
  if (code === GATEWAY_CODES.sendTimeout) return { error: 'connection_write_timeout', phase: 'send', cause: null }
  if (code !== null && RELAY_LIMITS.has(code)) return at('proxy_internal_error', progress.connected ? phaseAfterConnect : 'connect')
  if (code === null) return at('proxy_internal_error', progress.connected ? phaseAfterConnect : 'connect')

  switch (code) {
    case 'ENOTFOUND': case 'EAI_NONAME': case 'EAI_NODATA': case 'EAI_FAIL': return at('dns_error', 'dns')
    case 'EAI_AGAIN': return at('dns_timeout', 'dns')
    case 'ECONNREFUSED': return at('connection_refused', 'connect')
    case 'EHOSTUNREACH': case 'ENETUNREACH': case 'EHOSTDOWN': case 'ENETDOWN': case 'EADDRNOTAVAIL':
      return at('destination_ip_unroutable', 'connect')
    case 'UND_ERR_CONNECT_TIMEOUT': return at('connection_timeout', 'connect')
    case 'ETIMEDOUT':
      return progress.connected ? at(progress.responseStarted ? 'connection_read_timeout' : 'http_response_timeout', phaseAfterConnect) : at('connection_timeout', 'connect')
    case 'UND_ERR_HEADERS_TIMEOUT': return at('http_response_timeout', 'headers')
    case 'UND_ERR_HEADERS_OVERFLOW': return at('http_response_header_section_size', 'headers')
    case 'UND_ERR_BODY_TIMEOUT': return at('connection_read_timeout', 'body')
    // Before the response started, the framing itself was contradictory (two lengths, or a
    // length and chunking): a malformed answer, not one cut short.
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      return progress.responseStarted ? at('http_response_incomplete', 'body') : at('http_protocol_error', 'headers')
  }
  if (CERTIFICATE_CODES.has(code)) return at('tls_certificate_error', 'tls')
  if (code === 'EPROTO' || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) return at('tls_protocol_error', 'tls')
  if (code.startsWith('HPE_') || code === PARSER_ERROR || code.startsWith('UND_ERR_RESPONSE') || code === 'UND_ERR_INFO') {
    return progress.responseStarted ? at('http_response_incomplete', 'body') : at('http_protocol_error', 'headers')
  }
  if (TERMINATED_CODES.has(code)) {
    if (progress.responseStarted) return at('http_response_incomplete', 'body')
    // A reset while TLS is still being set up is the handshake failing, not the service.
    return progress.connected ? at('connection_terminated', phaseAfterConnect) : at('connection_terminated', 'connect')
  }
  return at('proxy_internal_error', progress.connected ? phaseAfterConnect : 'connect')
}

/**
 * The most specific code in an error and its `cause` chain. undici wraps socket errors
 * (`UND_ERR_SOCKET` around `ECONNRESET`), and the inner code says more.
 */
export function findCode (err: unknown): string | null {
  let found: string | null = null
  let current: unknown = err
  for (let depth = 0; depth < 5 && current !== null && typeof current === 'object'; depth++) {
    const { code: ownCode, name } = current as { code?: unknown, name?: unknown }
    const code = ownCode === undefined && name === PARSER_ERROR ? PARSER_ERROR : ownCode
    if (typeof code === 'string' && code !== '') {
      // Prefer a system/TLS code over undici's generic wrapper code.
      if (found === null || found === 'UND_ERR_SOCKET' || found === 'UND_ERR') found = code
      if (!code.startsWith('UND_ERR_SOCKET') && code !== 'UND_ERR') break
    }
    current = (current as { cause?: unknown }).cause
  }
  return found
}

/**
 * A fault of the client's request, from the code that reports it: the gateway's own
 * (`GATEWAY_CODES.bodyTooLarge`, `.clientBodyTimeout`) or Node's parser's. Any parser code not
 * named here is a malformed request.
 */
export function classifyClientFault (code: string | null | undefined): { error: 'http_request_error', status: number, detail: string } {
  const fault: ClientFault = code === GATEWAY_CODES.bodyTooLarge
    ? 'bodyTooLarge'
    : code === GATEWAY_CODES.clientBodyTimeout
      ? 'bodyTooSlow'
      : code === 'HPE_HEADER_OVERFLOW'
        ? 'headersTooLarge'
        : code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 'requestTooSlow'
          : code === GATEWAY_CODES.duplicateHost
            ? 'duplicateHost'
            : code === GATEWAY_CODES.unsafePath
              ? 'unsafePath'
              : code === GATEWAY_CODES.lengthRequired ? 'lengthRequired' : 'malformed'
  return { error: 'http_request_error', ...CLIENT_FAULTS[fault] }
}

/**
 * Fastify's own errors (and plugins' on the request path, such as @fastify/rate-limit) carry
 * an HTTP status: a 4xx is the client's doing, anything else the gateway's. The rate limiter's
 * store failing (when that denies) is told by its code.
 */
export function classifyRequestError (statusCode: unknown, code?: unknown): { error: ProxyErrorType, status: number } {
  if (code === GATEWAY_CODES.rateLimitStore) return { error: 'rate_limit_store_unavailable', status: 503 }
  const status = typeof statusCode === 'number' ? statusCode : 500
  if (status === 429) return { error: 'http_request_denied', status }
  if (status >= 400 && status < 500) return { error: 'http_request_error', status }
  return { error: 'proxy_internal_error', status: 500 }
}

/**
 * A request that could not get its pool's credentials (`auth.token` failed): a
 * `proxy_internal_error` answered as a bad gateway, temporary, in the send phase (nothing
 * reached the service). The details of its failure record.
 */
export function classifyCredentialsFailure (err: unknown): Required<Pick<FailureContext, 'phase' | 'cause' | 'status' | 'temporary' | 'detail' | 'why'>> {
  return {
    phase: 'send',
    cause: GATEWAY_CODES.credentials,
    status: CREDENTIALS_FAILURE.status,
    temporary: CREDENTIALS_FAILURE.temporary,
    detail: CREDENTIALS_FAILURE.detail,
    why: err instanceof Error ? ensureSentence(err.message) : 'The token function failed.'
  }
}

/** Ends `text` with a full stop unless it already ends a sentence (or is clipped with an ellipsis). */
export function ensureSentence (text: string): string {
  return /[.!?…]$/.test(text) ? text : `${text}.`
}

/**
 * A target name's lookup that failed in the gateway's own resolver (discovery): the resolver
 * not answering in time is `dns_timeout`, anything else (NXDOMAIN, SERVFAIL, refused) `dns_error`.
 */
export function classifyLookupFailure (code: string | null): 'dns_error' | 'dns_timeout' {
  return code === 'ETIMEOUT' || code === 'EAI_AGAIN' ? 'dns_timeout' : 'dns_error'
}
