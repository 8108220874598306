// docs/errors.md as data: for each RFC 9209 error type, the status a client receives, whose side
// the fault is on, whether a later retry is likely to work, and the public words. Nothing else
// in the code chooses a status for a failure.

export type ProxyErrorType =
  | 'dns_error'
  | 'dns_timeout'
  | 'connection_refused'
  | 'destination_ip_unroutable'
  | 'connection_timeout'
  | 'tls_protocol_error'
  | 'tls_certificate_error'
  | 'connection_terminated'
  | 'http_response_timeout'
  | 'http_protocol_error'
  | 'http_response_header_section_size'
  | 'connection_read_timeout'
  | 'connection_write_timeout'
  | 'http_response_incomplete'
  | 'destination_unavailable'
  | 'connection_limit_reached'
  | 'proxy_loop_detected'
  | 'destination_not_found'
  | 'proxy_internal_error'
  | 'http_request_error'
  | 'http_request_denied'
  // Not an RFC 9209 type: an upstream answered with a status listed in errors.intercept, and
  // the gateway replaced its body. It never appears as Proxy-Status `error` (we did not fail).
  | 'upstream_error_status'
  // Not an RFC 9209 type: the rate limit store failed and rateLimit.onStoreError is 'deny'.
  // Proxy-Status says `proxy_internal_error` (PROXY_STATUS_ERROR), RFC 9209's word for an
  // intermediary's own failure; the body names which one.
  | 'rate_limit_store_unavailable'

export type Blame = 'client' | 'gateway' | 'network' | 'upstream'
export type Phase = 'route' | 'queue' | 'dns' | 'connect' | 'tls' | 'send' | 'headers' | 'body'
/** Could the upstream have acted on the request? (docs/errors.md "sent?") */
export type Sent = 'no' | 'maybe' | 'yes'

export interface ErrorKind {
  status: number
  blame: Blame
  temporary: boolean
  sent: Sent
  title: string
  /** For the public: what happened, without internals. */
  detail: string
}

export const TAXONOMY: Readonly<Record<ProxyErrorType, ErrorKind>> = {
  dns_error: {
    status: 502,
    blame: 'network',
    temporary: false,
    sent: 'no',
    title: 'Service address not found',
    detail: 'The gateway could not find the address of the service behind it.'
  },
  dns_timeout: {
    status: 504,
    blame: 'network',
    temporary: true,
    sent: 'no',
    title: 'Service address lookup timed out',
    detail: 'The gateway could not look up the address of the service in time.'
  },
  connection_refused: {
    status: 502,
    blame: 'upstream',
    temporary: true,
    sent: 'no',
    title: 'Service refused the connection',
    detail: 'The service behind this gateway is not accepting connections.'
  },
  destination_ip_unroutable: {
    status: 502,
    blame: 'network',
    temporary: true,
    sent: 'no',
    title: 'Service unreachable',
    detail: 'The gateway has no network route to the service behind it.'
  },
  connection_timeout: {
    status: 504,
    blame: 'network',
    temporary: true,
    sent: 'no',
    title: 'Connection to the service timed out',
    detail: 'The gateway could not connect to the service in time.'
  },
  tls_protocol_error: {
    status: 502,
    blame: 'network',
    temporary: false,
    sent: 'no',
    title: 'Secure connection to the service failed',
    detail: 'The gateway could not set up a secure connection with the service.'
  },
  tls_certificate_error: {
    status: 502,
    blame: 'network',
    temporary: false,
    sent: 'no',
    title: 'Service certificate rejected',
    detail: 'The service presented a certificate the gateway does not trust.'
  },
  connection_terminated: {
    status: 502,
    blame: 'upstream',
    temporary: true,
    sent: 'maybe',
    title: 'Service closed the connection',
    detail: 'The service closed the connection before it answered.'
  },
  http_response_timeout: {
    status: 504,
    blame: 'upstream',
    temporary: true,
    sent: 'maybe',
    title: 'Service took too long',
    detail: 'The service took too long to answer.'
  },
  http_protocol_error: {
    status: 502,
    blame: 'upstream',
    temporary: false,
    sent: 'maybe',
    title: 'Service sent an invalid response',
    detail: 'The service answered with something that is not valid HTTP.'
  },
  http_response_header_section_size: {
    status: 502,
    blame: 'upstream',
    temporary: false,
    sent: 'maybe',
    title: 'Service response headers too large',
    detail: 'The service answered with more headers than the gateway accepts.'
  },
  connection_read_timeout: {
    status: 504,
    blame: 'upstream',
    temporary: true,
    sent: 'yes',
    title: 'Service stopped sending',
    detail: 'The service stopped sending its answer part way through.'
  },
  connection_write_timeout: {
    status: 504,
    blame: 'upstream',
    temporary: true,
    sent: 'maybe',
    title: 'Service stopped reading',
    detail: 'The service stopped taking the request part way through.'
  },
  http_response_incomplete: {
    status: 502,
    blame: 'upstream',
    temporary: true,
    sent: 'yes',
    title: 'Service answer cut short',
    detail: 'The connection to the service was lost while its answer was being sent.'
  },
  destination_unavailable: {
    status: 503,
    blame: 'upstream',
    temporary: true,
    sent: 'no',
    title: 'Service unavailable',
    detail: 'No healthy instance of this service is available right now.'
  },
  connection_limit_reached: {
    status: 503,
    blame: 'gateway',
    temporary: true,
    sent: 'no',
    title: 'Service busy',
    detail: 'The service is handling as many requests as it can; this one waited too long.'
  },
  proxy_loop_detected: {
    status: 502,
    blame: 'gateway',
    temporary: false,
    sent: 'no',
    title: 'Request loop detected',
    detail: 'This request came back to the gateway that sent it, so it was stopped.'
  },
  destination_not_found: {
    status: 500,
    blame: 'gateway',
    temporary: false,
    sent: 'no',
    title: 'No service for this request',
    detail: 'The gateway has no service configured for this request.'
  },
  proxy_internal_error: {
    status: 500,
    blame: 'gateway',
    temporary: false,
    sent: 'maybe',
    title: 'Gateway error',
    detail: 'The gateway failed while handling this request.'
  },
  http_request_error: {
    status: 400,
    blame: 'client',
    temporary: false,
    sent: 'no',
    title: 'Bad request',
    detail: 'The request could not be handled as it was sent.'
  },
  http_request_denied: {
    status: 429,
    blame: 'client',
    temporary: true,
    sent: 'no',
    title: 'Too many requests',
    detail: 'Too many requests were sent; wait and try again.'
  },
  upstream_error_status: {
    status: 502,
    blame: 'upstream',
    temporary: true,
    sent: 'yes',
    title: 'Service reported an error',
    detail: 'The service behind this gateway could not complete this request.'
  },
  rate_limit_store_unavailable: {
    status: 503,
    blame: 'gateway',
    temporary: true,
    sent: 'no',
    title: 'Temporarily unavailable',
    detail: 'The gateway cannot check its request limits right now, so it does not take requests; try again shortly.'
  }
}

/**
 * The `error` parameter Proxy-Status carries for the types that are not RFC 9209's: an RFC type
 * to say instead, or null for none (the gateway itself did not fail). Any other type is its own.
 */
export const PROXY_STATUS_ERROR: Readonly<Partial<Record<ProxyErrorType, ProxyErrorType | null>>> = {
  upstream_error_status: null,
  rate_limit_store_unavailable: 'proxy_internal_error'
}

/**
 * Faults in the client's own request that the gateway or Node detects, all `http_request_error`
 * with blame on the client: the status each gets and the words a client reads. (Fastify's own
 * 4xx errors carry their status and message; these do not.)
 */
export type ClientFault = 'bodyTooLarge' | 'bodyTooSlow' | 'headersTooLarge' | 'requestTooSlow' | 'duplicateHost' | 'unsafePath' | 'lengthRequired' | 'malformed'

export const CLIENT_FAULTS: Readonly<Record<ClientFault, { status: number, detail: string }>> = {
  bodyTooLarge: { status: 413, detail: 'The request body is larger than this service accepts.' },
  bodyTooSlow: { status: 408, detail: 'The request body did not arrive in time.' },
  headersTooLarge: { status: 431, detail: 'The request headers are larger than this server accepts.' },
  requestTooSlow: { status: 408, detail: 'The request did not arrive in time.' },
  duplicateHost: { status: 400, detail: 'The request has more than one Host header.' },
  unsafePath: { status: 400, detail: 'This path is not one the gateway forwards.' },
  lengthRequired: { status: 411, detail: 'This request must give the length of its body (Content-Length).' },
  malformed: { status: 400, detail: 'The request is not valid HTTP.' }
}

/**
 * The gateway could not get the upstream credentials of a pool (its `auth.token` failed): a
 * `proxy_internal_error` the gateway answers as a bad gateway, not a bug: nothing reached the
 * service, and the next request calls the token function again.
 */
export const CREDENTIALS_FAILURE = {
  status: 502,
  temporary: true,
  detail: 'The gateway could not authenticate to the service behind it.'
} as const
