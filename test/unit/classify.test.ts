// lib/errors/classify.ts without a socket: every code the classifier knows, at every point of
// an attempt where it can happen, and the smaller classifiers beside it.
import t from 'tap'
import {
  classify, classifyClientFault, classifyCredentialsFailure, classifyLookupFailure, classifyRequestError,
  ensureSentence, findCode, GATEWAY_CODES, GatewayError, type Progress
} from '../../lib/errors/classify.js'

const before: Progress = { connected: false, requestSent: false, responseStarted: false }
const sending: Progress = { connected: true, requestSent: false, responseStarted: false }
const waiting: Progress = { connected: true, requestSent: true, responseStarted: false }
const streaming: Progress = { connected: true, requestSent: true, responseStarted: true }
const err = (code: unknown, cause?: unknown): Error => Object.assign(new Error(String(code)), { code, cause })
const verdict = (e: unknown, p: Progress): string => { const v = classify(e, p); return `${v.error} ${v.phase} ${v.cause ?? '-'}` }

t.test('gateway codes', async (t) => {
  t.equal(verdict(new GatewayError(GATEWAY_CODES.clientAborted, 'gone'), before), 'client_aborted connect -')
  t.equal(verdict(err(GATEWAY_CODES.clientAborted), sending), 'client_aborted send -')
  t.equal(verdict(err(GATEWAY_CODES.clientAborted), waiting), 'client_aborted headers -')
  t.equal(verdict(err(GATEWAY_CODES.clientAborted), streaming), 'client_aborted body -')
  t.equal(verdict(err(GATEWAY_CODES.totalTimeout), before), 'http_response_timeout connect -')
  t.equal(verdict(err(GATEWAY_CODES.totalTimeout), waiting), 'http_response_timeout headers -')
  t.equal(verdict(err(GATEWAY_CODES.bodyTooLarge), waiting), 'http_request_error send -')
  t.equal(verdict(err(GATEWAY_CODES.clientBodyTimeout), before), 'http_request_error send -')
  t.equal(verdict(err(GATEWAY_CODES.sendTimeout), sending), 'connection_write_timeout send -')
  const e = new GatewayError('X', 'why', { cause: 'c' })
  t.same([e.code, e.message, e.cause], ['X', 'why', 'c'])
})

t.test('no code: the gateway\'s own fault, where the attempt had got to', async (t) => {
  t.equal(verdict(new Error('surprise'), before), 'proxy_internal_error connect -')
  t.equal(verdict('surprise', sending), 'proxy_internal_error send -')
  t.equal(verdict(undefined, streaming), 'proxy_internal_error body -')
  t.equal(verdict(err('SOMETHING_NEW'), waiting), 'proxy_internal_error headers SOMETHING_NEW', 'an unknown code')
  t.equal(verdict(err('SOMETHING_NEW'), before), 'proxy_internal_error connect SOMETHING_NEW')
})

t.test('DNS and connect', async (t) => {
  for (const code of ['ENOTFOUND', 'EAI_NONAME', 'EAI_NODATA', 'EAI_FAIL']) t.equal(verdict(err(code), before), `dns_error dns ${code}`)
  t.equal(verdict(err('EAI_AGAIN'), before), 'dns_timeout dns EAI_AGAIN')
  t.equal(verdict(err('ECONNREFUSED'), before), 'connection_refused connect ECONNREFUSED')
  for (const code of ['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EADDRNOTAVAIL']) t.equal(verdict(err(code), before), `destination_ip_unroutable connect ${code}`)
  t.equal(verdict(err('UND_ERR_CONNECT_TIMEOUT'), before), 'connection_timeout connect UND_ERR_CONNECT_TIMEOUT')
  t.equal(verdict(err('ETIMEDOUT'), before), 'connection_timeout connect ETIMEDOUT')
  t.equal(verdict(err('ETIMEDOUT'), waiting), 'http_response_timeout headers ETIMEDOUT')
  t.equal(verdict(err('ETIMEDOUT'), sending), 'http_response_timeout send ETIMEDOUT')
  t.equal(verdict(err('ETIMEDOUT'), streaming), 'connection_read_timeout body ETIMEDOUT')
})

t.test('undici\'s timeouts, overflow and framing', async (t) => {
  t.equal(verdict(err('UND_ERR_HEADERS_TIMEOUT'), waiting), 'http_response_timeout headers UND_ERR_HEADERS_TIMEOUT')
  t.equal(verdict(err('UND_ERR_HEADERS_OVERFLOW'), waiting), 'http_response_header_section_size headers UND_ERR_HEADERS_OVERFLOW')
  t.equal(verdict(err('UND_ERR_BODY_TIMEOUT'), streaming), 'connection_read_timeout body UND_ERR_BODY_TIMEOUT')
  t.equal(verdict(err('UND_ERR_RES_CONTENT_LENGTH_MISMATCH'), streaming), 'http_response_incomplete body UND_ERR_RES_CONTENT_LENGTH_MISMATCH')
  t.equal(verdict(err('UND_ERR_RES_CONTENT_LENGTH_MISMATCH'), waiting), 'http_protocol_error headers UND_ERR_RES_CONTENT_LENGTH_MISMATCH')
})

t.test('TLS: certificates apart from handshakes', async (t) => {
  for (const code of ['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_REVOKED', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'CERT_SIGNATURE_FAILURE',
    'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH', 'INVALID_CA', 'PATH_LENGTH_EXCEEDED']) {
    t.equal(verdict(err(code), before), `tls_certificate_error tls ${code}`)
  }
  for (const code of ['EPROTO', 'ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_TLS_HANDSHAKE_TIMEOUT']) t.equal(verdict(err(code), before), `tls_protocol_error tls ${code}`)
})

t.test('parser errors: before the answer a protocol error, after it a cut answer', async (t) => {
  for (const code of ['HPE_INVALID_STATUS', 'HTTPParserError', 'UND_ERR_RESPONSE_STATUS_CODE', 'UND_ERR_INFO']) {
    t.equal(verdict(err(code), waiting), `http_protocol_error headers ${code}`)
    t.equal(verdict(err(code), streaming), `http_response_incomplete body ${code}`)
  }
  t.equal(verdict(Object.assign(new Error('bad'), { name: 'HTTPParserError' }), waiting), 'http_protocol_error headers HTTPParserError', 'told by its class name')
})

t.test('connections cut: where the attempt had got to', async (t) => {
  for (const code of ['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'ECONNABORTED', 'UND_ERR_CLOSED', 'ERR_STREAM_PREMATURE_CLOSE']) {
    t.equal(verdict(err(code), before), `connection_terminated connect ${code}`)
    t.equal(verdict(err(code), sending), `connection_terminated send ${code}`)
    t.equal(verdict(err(code), waiting), `connection_terminated headers ${code}`)
    t.equal(verdict(err(code), streaming), `http_response_incomplete body ${code}`)
  }
})

t.test('findCode: the innermost specific code, within five levels', async (t) => {
  t.equal(findCode(err('UND_ERR_SOCKET', err('ECONNRESET'))), 'ECONNRESET')
  t.equal(findCode(err('UND_ERR', err('EPIPE'))), 'EPIPE')
  t.equal(findCode(err('UND_ERR_SOCKET', err('UND_ERR', err('ECONNRESET')))), 'ECONNRESET', 'through two wrappers')
  t.equal(findCode(err('ECONNREFUSED', err('EOTHER'))), 'ECONNREFUSED', 'a specific outer code stops the search')
  t.equal(findCode(err('UND_ERR_SOCKET', new Error('no code'))), 'UND_ERR_SOCKET')
  t.equal(findCode(err(undefined, err('EPIPE'))), 'EPIPE', 'an outer error without a code')
  t.equal(findCode(err('', err('EPIPE'))), 'EPIPE', 'an empty code is none')
  t.equal(findCode(err(42, err('EPIPE'))), 'EPIPE', 'a numeric code is none')
  t.equal(findCode(err(undefined, err(undefined, err(undefined, err(undefined, err('EDEEP')))))), 'EDEEP', 'the fifth level')
  t.equal(findCode(err(undefined, err(undefined, err(undefined, err(undefined, err(undefined, err('ETOODEEP'))))))), null, 'not the sixth')
  t.equal(findCode(Object.assign(new Error('x'), { code: 'EOWN', name: 'HTTPParserError' })), 'EOWN', 'an own code before the class name')
  t.equal(findCode('ECONNRESET'), null, 'a string is not an error')
  t.equal(findCode(null), null)
})

t.test('classifyClientFault: each client fault its status', async (t) => {
  t.same(classifyClientFault(GATEWAY_CODES.bodyTooLarge), { error: 'http_request_error', status: 413, detail: classifyClientFault(GATEWAY_CODES.bodyTooLarge).detail })
  t.same([GATEWAY_CODES.bodyTooLarge, GATEWAY_CODES.clientBodyTimeout, 'HPE_HEADER_OVERFLOW', 'ERR_HTTP_REQUEST_TIMEOUT', GATEWAY_CODES.duplicateHost, GATEWAY_CODES.unsafePath, 'HPE_INVALID_METHOD', null, undefined]
    .map((code) => classifyClientFault(code).status), [413, 408, 431, 408, 400, 400, 400, 400, 400])
  const details = new Set([GATEWAY_CODES.clientBodyTimeout, 'ERR_HTTP_REQUEST_TIMEOUT', GATEWAY_CODES.duplicateHost, GATEWAY_CODES.unsafePath, 'x'].map((code) => classifyClientFault(code).detail))
  t.equal(details.size, 5, 'each fault has words of its own')
})

t.test('classifyRequestError: 429 denied, 4xx the client\'s, the rest the gateway\'s', async (t) => {
  t.same(classifyRequestError(429), { error: 'http_request_denied', status: 429 })
  t.same(classifyRequestError(400), { error: 'http_request_error', status: 400 })
  t.same(classifyRequestError(499), { error: 'http_request_error', status: 499 })
  t.same(classifyRequestError(399), { error: 'proxy_internal_error', status: 500 })
  t.same(classifyRequestError(500), { error: 'proxy_internal_error', status: 500 })
  t.same(classifyRequestError('404'), { error: 'proxy_internal_error', status: 500 }, 'a status that is not a number')
  t.same(classifyRequestError(429, GATEWAY_CODES.rateLimitStore), { error: 'rate_limit_store_unavailable', status: 503 })
})

t.test('classifyCredentialsFailure and ensureSentence', async (t) => {
  t.match(classifyCredentialsFailure(new Error('vault said no')), { phase: 'send', cause: 'FST_UPSTREAM_CREDENTIALS', status: 502, temporary: true, why: 'vault said no.' })
  t.equal(classifyCredentialsFailure('thrown').why, 'The token function failed.')
  t.same(['a', 'a.', 'a!', 'a?', 'a…', 'a. '].map(ensureSentence), ['a.', 'a.', 'a!', 'a?', 'a…', 'a. .'])
})

t.test('classifyLookupFailure: a resolver that did not answer in time, or any other failure', async (t) => {
  t.equal(classifyLookupFailure('ETIMEOUT'), 'dns_timeout')
  t.equal(classifyLookupFailure('EAI_AGAIN'), 'dns_timeout')
  t.equal(classifyLookupFailure('ENOTFOUND'), 'dns_error')
  t.equal(classifyLookupFailure(null), 'dns_error')
})
