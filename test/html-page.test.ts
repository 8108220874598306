// The HTML error page: what it shows to whom, which hop it marks, and that nothing reflected
// into it can run or fetch anything.
import t from 'tap'
import { renderHtml, escapeHtml } from '../lib/errors/html.js'
import type { Problem } from '../lib/errors/problem.js'

const HOSTILE_INSTANCE = '/<script>alert(1)</script>'

function connectionRefusedFull (): Problem {
  return {
    type: 'https://errors.example.test/connection_refused',
    title: 'Service refused the connection',
    status: 502,
    detail: 'The service behind this gateway is not accepting connections.',
    instance: '/users/42?tab=profile',
    error: 'connection_refused',
    blame: 'upstream',
    phase: 'connect',
    requestId: 'req-7f3a9c',
    timestamp: '2025-06-01T12:34:56.789Z',
    temporary: true,
    hint: 'Nothing is listening on 10.0.0.7:3001. Check that the service is running and bound to the right port.',
    pool: 'accounts-v2',
    target: '10.0.0.7:3001',
    cause: 'ECONNREFUSED',
    attempts: [
      { target: '10.0.0.6:3001', error: 'connection_refused', cause: 'ECONNREFUSED', phase: 'connect', ms: 3.4 },
      { target: '10.0.0.7:3001', error: 'connection_refused', cause: 'ECONNREFUSED', phase: 'connect', ms: 2 }
    ]
  }
}

// As buildProblem makes it for public exposure: no pool, target, cause or attempts, and the
// public hint.
function destinationUnavailablePublic (): Problem {
  return {
    type: 'about:blank',
    title: 'Service unavailable',
    status: 503,
    detail: 'No healthy instance of this service is available right now.',
    instance: '/orders',
    error: 'destination_unavailable',
    blame: 'upstream',
    phase: 'route',
    requestId: 'req-0001',
    timestamp: '2025-06-01T08:00:00.000Z',
    temporary: true,
    hint: "Try again in a few moments. If it keeps failing, tell the site's operators and quote the request id."
  }
}

function badRequestFromClient (): Problem {
  return {
    type: 'about:blank',
    title: 'Bad Request',
    status: 400,
    detail: 'The request could not be handled as it was sent.',
    instance: '/search',
    error: 'http_request_error',
    blame: 'client',
    phase: 'route',
    requestId: 'req-client-9',
    timestamp: '2025-06-01T09:15:00.000Z',
    temporary: false,
    hint: 'Check the request and send it again.'
  }
}

const FULL = { proxyName: 'edge-gw', full: true, contact: null }
const PUBLIC = { proxyName: 'edge-gw', full: false, contact: 'ops@example.test' }

/** The one element marked as the failing hop, as `data-hop` names it. */
function failedHops (html: string): string[] {
  return [...html.matchAll(/data-hop="([a-z-]+)" data-state="failed"/g)].map((m) => m[1] ?? '')
}

/** Nothing that could run or make the browser fetch anything. */
function assertSelfContained (t: { notMatch: (found: unknown, pattern: RegExp, message: string) => boolean, match: (found: unknown, pattern: string, message: string) => boolean }, html: string): void {
  t.notMatch(html, /<script/i, 'no script element')
  // The one link is an empty inline icon: without it a browser asks the gateway for
  // /favicon.ico, a second request that would fail (and be logged) for every error page.
  const page = html.replace('<link rel="icon" href="data:,">', '')
  t.match(html, '<link rel="icon" href="data:,">', 'an empty inline icon')
  t.notMatch(page, /<(?:img|link|iframe|object|embed|video|audio|source)\b/i, 'no element that loads a resource')
  t.notMatch(page, /\b(?:src|href|srcset|action|poster)\s*=/i, 'no attribute that loads or links a resource')
  t.notMatch(html, /@import/i, 'no CSS import')
  t.notMatch(html, /url\(/i, 'no CSS url()')
  t.notMatch(html, /https?:\/\//i, 'no absolute URL')
  t.notMatch(html, /\/\//, 'no protocol-relative URL')
  t.notMatch(html, /\bon[a-z]+\s*=/i, 'no inline event handler')
}

t.test('a refused connection with full exposure shows the path, the reference and the operator details', async (t) => {
  const html = renderHtml(connectionRefusedFull(), FULL)

  t.match(html, /^<!doctype html>/, 'a full document')
  t.match(html, '<title>502 Service refused the connection</title>')
  t.match(html, '<meta name="viewport" content="width=device-width, initial-scale=1">')
  t.match(html, '<meta name="robots" content="noindex">')
  t.match(html, /<h1><span class="status">502<\/span> <span class="title">Service refused the connection<\/span><\/h1>/)
  t.match(html, 'The service behind this gateway is not accepting connections.')
  t.match(html, '<p class="where">The service behind the gateway failed when the gateway tried to connect.</p>', 'the path in words')
  t.match(html, '<code class="ref-value" id="request-id">req-7f3a9c</code>')
  t.match(html, '<time class="ref-value" datetime="2025-06-01T12:34:56.789Z">2025-06-01 12:34:56 UTC</time>')
  t.match(html, '<code class="ref-value">/users/42?tab=profile</code>', 'the instance')
  t.match(html, 'Answered by the gateway <code>edge-gw</code>')

  t.same(failedHops(html), ['service'], 'the service box is the one failing hop')
  t.match(html, '<li class="hop node is-failed" data-hop="service" data-state="failed" aria-label="Service: failed here (connect)">')
  t.match(html, 'data-hop="gateway" data-state="ok"', 'the gateway worked')
  t.match(html, 'data-hop="service-link" data-state="ok"', 'so did the link to the service')
  t.match(html, '<code class="pool">accounts-v2</code>', 'the service box names the pool')

  t.match(html, 'This is usually temporary.', 'a temporary failure: try again shortly')
  t.match(html, 'What an operator can do')
  t.match(html, '<p class="hint">Nothing is listening on 10.0.0.7:3001.')
  t.match(html, '<dt>Pool</dt><dd><code>accounts-v2</code></dd>')
  t.match(html, '<dt>Target</dt><dd><code>10.0.0.7:3001</code></dd>')
  t.match(html, '<dt>Cause</dt><dd><code>ECONNREFUSED</code></dd>')
  t.match(html, '<caption>2 tries, in order</caption>')
  const rows = [...html.matchAll(/<tr class="attempt">([\s\S]*?)<\/tr>/g)].map((m) => (m[1] ?? '').replace(/<[^>]+>/g, '').trim().split('\n'))
  t.same(rows, [
    ['1', '10.0.0.6:3001', 'connection_refused', 'ECONNREFUSED', 'connect', '3'],
    ['2', '10.0.0.7:3001', 'connection_refused', 'ECONNREFUSED', 'connect', '2']
  ], 'one row per try: target, error, cause, phase, ms')

  assertSelfContained(t, html)
})

t.test('a public page shows the same failure without any internals', async (t) => {
  const html = renderHtml(destinationUnavailablePublic(), PUBLIC)

  t.match(html, '<title>503 Service unavailable</title>')
  t.match(html, 'No healthy instance of this service is available right now.')
  t.match(html, 'id="request-id">req-0001</code>')
  t.same(failedHops(html), ['service'])
  t.match(html, /<span class="hop-name">Service<\/span><span class="hop-state">Failed here · routing<\/span>/, 'the service box is just "Service"')
  t.match(html, 'Wait a few moments, then reload the page.')
  t.match(html, "tell the site's operators at <strong class=\"contact\">ops@example.test</strong> and quote the request ID <code>req-0001</code>")

  t.notMatch(html, 'What an operator can do')
  t.notMatch(html, /class="(?:pool|hint|facts|attempts?)"/, 'no operator elements')
  t.notMatch(html, /<dt>/, 'no operator facts')
  t.notMatch(html, /tell the site's operators and quote the request id\./, 'the problem hint is not echoed: the page words its own advice')
  assertSelfContained(t, html)
})

t.test('public exposure leaves out internals even when the problem carries them', async (t) => {
  const html = renderHtml(connectionRefusedFull(), { ...PUBLIC, contact: null })

  for (const secret of ['accounts-v2', '10.0.0.7', '10.0.0.6', 'ECONNREFUSED', 'Nothing is listening', 'tries']) {
    t.notMatch(html, secret, `no ${secret}`)
  }
  t.match(html, "tell the site's operators and quote the request ID <code>req-7f3a9c</code>", 'no contact given')
  t.same(failedHops(html), ['service'])
})

t.test('a client error marks the client, and the gateway as the one that answered', async (t) => {
  const html = renderHtml(badRequestFromClient(), PUBLIC)

  t.match(html, '<title>400 Bad Request</title>')
  t.match(html, 'id="request-id">req-client-9</code>')
  t.same(failedHops(html), ['client'])
  t.match(html, '<li class="hop node is-failed" data-hop="client" data-state="failed" aria-label="Client: failed here (routing)">')
  t.match(html, 'data-hop="gateway" data-state="ok"')
  t.match(html, 'data-hop="service-link" data-state="unreached"')
  t.match(html, 'data-hop="service" data-state="unreached"')
  t.match(html, 'Check the address and what was sent, then try again.')
  t.match(html, '<p class="where">The request could not be handled as sent.</p>')
  t.match(html, '<p class="eyebrow">Error 400 · retrying will not help</p>')
  assertSelfContained(t, html)
})

t.test('each blame marks its own hop', async (t) => {
  const cases: Array<[Problem['blame'], Problem['phase'], string]> = [
    ['client', 'route', 'client'],
    ['gateway', 'queue', 'gateway'],
    ['network', 'dns', 'service-link'],
    ['network', 'connect', 'service-link'],
    ['network', 'tls', 'service-link'],
    ['upstream', 'headers', 'service']
  ]
  for (const [blame, phase, hop] of cases) {
    const html = renderHtml({ ...connectionRefusedFull(), blame, phase }, FULL)
    t.same(failedHops(html), [hop], `${blame} in ${phase} marks ${hop}`)
  }
  const tls = renderHtml({ ...connectionRefusedFull(), blame: 'network', phase: 'tls' }, FULL)
  t.match(tls, '<ol class="path link-failed">', 'room is made for the label of a failed link')
  t.match(tls, '<li class="hop link is-failed" data-hop="service-link" data-state="failed" aria-label="Gateway to service: failed here (TLS handshake)">')
  t.match(tls, 'data-hop="service" data-state="unreached"', 'the service was never reached')
})

t.test('every reflected value is escaped', async (t) => {
  const hostile: Problem = {
    ...connectionRefusedFull(),
    instance: HOSTILE_INSTANCE,
    title: 'T<script>x</script>',
    detail: 'D<script>x</script>',
    hint: 'H<script>alert("hint")</script>',
    requestId: '"><script>x</script>',
    timestamp: '<script>not a date</script>',
    pool: '<script>pool</script>',
    target: '<script src=//evil.test/x.js></script>',
    cause: "'><script>x</script>",
    attempts: [{ target: '<img src=x onerror=alert(1)>', error: null, cause: '<script>c</script>', phase: 'body', ms: 1, status: 500 }]
  }
  const html = renderHtml(hostile, { proxyName: '<script>gw</script>', full: true, contact: '<script>contact</script>' })

  t.notMatch(html, /<script/i, 'no raw <script anywhere')
  t.notMatch(html, /<img/i)
  t.match(html, '<code class="ref-value">/&lt;script&gt;alert(1)&lt;/script&gt;</code>', 'the hostile instance is shown as text')
  t.match(html, '<p class="hint">H&lt;script&gt;alert(&quot;hint&quot;)&lt;/script&gt;</p>')
  t.match(html, '<dt>Target</dt><dd><code>&lt;script src=//evil.test/x.js&gt;&lt;/script&gt;</code></dd>')
  t.match(html, '<td data-label="Target"><code>&lt;img src=x onerror=alert(1)&gt;</code></td>')
  t.match(html, '<td data-label="Error">answered 500</td>', 'a try that got an answer shows its status')
  t.match(html, 'id="request-id">&quot;&gt;&lt;script&gt;x&lt;/script&gt;</code>')
  t.match(html, '<dt>Cause</dt><dd><code>&#39;&gt;&lt;script&gt;x&lt;/script&gt;</code></dd>')
  t.match(html, '<title>502 T&lt;script&gt;x&lt;/script&gt;</title>')
  t.match(html, '<code>&lt;script&gt;gw&lt;/script&gt;</code>', 'the proxy name')
  t.match(html, '<strong class="contact">&lt;script&gt;contact&lt;/script&gt;</strong>', 'the contact')
  t.match(html, 'datetime="&lt;script&gt;not a date&lt;/script&gt;"', 'a timestamp in an attribute')
})

t.test('escapeHtml escapes the five significant characters and nothing else', async (t) => {
  t.equal(escapeHtml('a&b<c>d"e\'f'), 'a&amp;b&lt;c&gt;d&quot;e&#39;f')
  t.equal(escapeHtml('&amp;'), '&amp;amp;', 'escapes an already escaped value again: it is text')
  t.equal(escapeHtml('plain ünïcode ✓'), 'plain ünïcode ✓')
  t.equal(escapeHtml(null), '')
  t.equal(escapeHtml(502), '502')
})

t.test('the page is styled for phones and for dark mode', async (t) => {
  const html = renderHtml(connectionRefusedFull(), FULL)
  t.match(html, /<style>[\s\S]*@media \(prefers-color-scheme:dark\)[\s\S]*<\/style>/)
  t.match(html, /<style>[\s\S]*@media \(max-width:600px\)\{[\s\S]*\.path,\.path\.link-failed\{flex-direction:column/, 'the path stacks on a narrow screen')
  t.equal(html.match(/<style>/g)?.length, 1, 'one inline style element')
})
