// The classifier on its own, for the rows loopback cannot produce. DNS: this machine's resolver
// is not on loopback, so a lookup would leave the machine; the DNS rows are checked here, and
// end to end against a real loopback DNS server in discovery.test.ts.
import t from 'tap'
import { GATEWAY_CODES, classify, classifyRequestError, findCode } from '../lib/errors/classify.js'
import { makeFailure } from '../lib/errors/failure.js'
import { TAXONOMY } from '../lib/errors/taxonomy.js'

const before = { connected: false, requestSent: false, responseStarted: false }
const waiting = { connected: true, requestSent: true, responseStarted: false }
const sending = { connected: true, requestSent: false, responseStarted: false }
const streaming = { connected: true, requestSent: true, responseStarted: true }
const err = (code: string, cause?: unknown): Error => Object.assign(new Error(code), { code, cause })

const rows: Array<[string, unknown, typeof before, string, string]> = [
  ['ENOTFOUND', err('ENOTFOUND'), before, 'dns_error', 'dns'],
  ['EAI_NONAME', err('EAI_NONAME'), before, 'dns_error', 'dns'],
  ['EAI_AGAIN', err('EAI_AGAIN'), before, 'dns_timeout', 'dns'],
  ['EHOSTUNREACH', err('EHOSTUNREACH'), before, 'destination_ip_unroutable', 'connect'],
  ['ENETUNREACH', err('ENETUNREACH'), before, 'destination_ip_unroutable', 'connect'],
  ['ETIMEDOUT while connecting', err('ETIMEDOUT'), before, 'connection_timeout', 'connect'],
  ['EPIPE while sending', err('EPIPE'), sending, 'connection_terminated', 'send'],
  ['UND_ERR_SOCKET around ECONNRESET', err('UND_ERR_SOCKET', err('ECONNRESET')), waiting, 'connection_terminated', 'headers'],
  ['ECONNRESET after headers', err('ECONNRESET'), streaming, 'http_response_incomplete', 'body'],
  ['content-length mismatch', err('UND_ERR_RES_CONTENT_LENGTH_MISMATCH'), streaming, 'http_response_incomplete', 'body'],
  ['contradictory framing before the response', err('UND_ERR_RES_CONTENT_LENGTH_MISMATCH'), waiting, 'http_protocol_error', 'headers'],
  ['CERT_HAS_EXPIRED', err('CERT_HAS_EXPIRED'), before, 'tls_certificate_error', 'tls'],
  ['ERR_TLS_CERT_ALTNAME_INVALID', err('ERR_TLS_CERT_ALTNAME_INVALID'), before, 'tls_certificate_error', 'tls'],
  ['ERR_SSL_WRONG_VERSION_NUMBER', err('ERR_SSL_WRONG_VERSION_NUMBER'), before, 'tls_protocol_error', 'tls'],
  ['an error with no code', new Error('surprise'), waiting, 'proxy_internal_error', 'headers'],
  ['a thrown string', 'surprise', before, 'proxy_internal_error', 'connect']
]

for (const [name, error, progress, type, phase] of rows) {
  t.test(`${name} → ${type} in ${phase}`, async (t) => {
    const verdict = classify(error, progress)
    t.equal(verdict.error, type)
    t.equal(verdict.phase, phase)
  })
}

t.test('the innermost specific code wins over undici\'s wrapper', async (t) => {
  t.equal(findCode(err('UND_ERR_SOCKET', err('ECONNRESET'))), 'ECONNRESET')
  t.equal(findCode(err('UND_ERR_SOCKET')), 'UND_ERR_SOCKET')
  t.equal(findCode(Object.assign(new Error('bad'), { name: 'HTTPParserError' })), 'HTTPParserError')
  t.equal(findCode(null), null)
})

t.test('Fastify errors: 429 is denied, other 4xx are the client\'s, the rest the gateway\'s', async (t) => {
  t.same(classifyRequestError(429), { error: 'http_request_denied', status: 429 })
  t.same(classifyRequestError(413), { error: 'http_request_error', status: 413 })
  t.same(classifyRequestError(503), { error: 'proxy_internal_error', status: 500 })
  t.same(classifyRequestError(undefined), { error: 'proxy_internal_error', status: 500 })
  t.same(classifyRequestError(undefined, GATEWAY_CODES.rateLimitStore), { error: 'rate_limit_store_unavailable', status: 503 }, 'the rate limit store failing, with onStoreError "deny"')
})

t.test('every type has its status, blame and words, and a hint that names what to change', async (t) => {
  for (const [type, kind] of Object.entries(TAXONOMY)) {
    const failure = makeFailure(type as keyof typeof TAXONOMY, {
      phase: 'connect',
      pool: 'users',
      target: '10.0.0.7:3001',
      cause: 'ECODE',
      ms: 12,
      timeouts: { connect: 2000, headers: 30000, body: 30000, total: 60000 }
    })
    t.equal(failure.status, kind.status, `${type} status`)
    t.ok(failure.title.length > 0 && failure.detail.length > 0 && failure.hint.length > 0, `${type} words`)
    t.notMatch(failure.detail, /10\.0\.0\.7|3001|ECODE/, `${type}: the public detail names nothing internal`)
    t.ok(Object.isFrozen(failure), `${type}: the record is immutable`)
  }
  const timeout = makeFailure('connection_timeout', { phase: 'connect', target: '10.0.0.7:3001', ms: 2000, timeouts: { connect: 2000, headers: 1, body: 1, total: 1 } })
  t.match(timeout.hint, /within 2000 ms \(timeouts\.connect\)/)
})

t.test('docs/errors.md documents every type the gateway can give, with its status', async (t) => {
  const { readFile } = await import('node:fs/promises')
  const doc = await readFile(new URL('../docs/errors.md', import.meta.url), 'utf8')
  for (const [type, kind] of Object.entries(TAXONOMY)) {
    const row = doc.split('\n').find((line) => line.startsWith('|') && line.includes(`\`${type}\``))
    if (type === 'upstream_error_status') {
      t.match(doc, /`upstream_error_status`/, 'the intercepted status is explained')
      continue
    }
    t.ok(row !== undefined, `${type} has a row`)
    t.match(row, new RegExp(`\\| ${kind.status}[ ,+]|${kind.status}, `), `${type}: its status ${kind.status}`)
    t.match(row, new RegExp(`\\| ${kind.blame} \\|`), `${type}: its blame`)
  }
})
