// One real fault server per row of ERRORS.md that loopback can produce. For each: the status,
// Proxy-Status, every problem member, the text and HTML variants (with a hostile URL), public
// exposure leaking nothing, and exactly one log record with no duplicate Fastify error line.
import t from 'tap'
import Fastify from 'fastify'
import { request } from 'undici'
import upstream from '../lib/index.js'
import { startGateway, waitFor, type Gateway, type LogRecord } from './helpers/gateway.js'
import { startUpstream, startTcp, startBlackhole, startHttpsUpstream, selfSignedCert, startRefusing, deadTarget, type Running } from './helpers/servers.js'
import type { UpstreamOptions } from '../lib/index.js'
import type { Problem } from '../lib/errors/problem.js'
import { proxyStatus, ourProxyStatus } from './helpers/proxy-status.js'

interface Scenario {
  name: string
  /** Starts the fault; returns the target URL and anything the pool needs. */
  start: () => Promise<{ target: string, close: () => Promise<void>, pool?: Partial<UpstreamOptions['pools'][string]> } | null>
  status: number
  error: string
  blame: string
  phase: string
  cause: RegExp
  temporary: boolean
}

const answerAfterRequest = (bytes: string | null) => async () => {
  const server = await startTcp((socket) => {
    socket.once('data', () => {
      if (bytes === null) socket.destroy()
      else socket.end(bytes)
    })
  })
  return { target: server.url, close: server.close }
}

const scenarios: Scenario[] = [
  {
    name: 'nothing listens on the port',
    start: async () => {
      const refusing = await startRefusing()
      return { target: refusing.url, close: refusing.close }
    },
    status: 502,
    error: 'connection_refused',
    blame: 'upstream',
    phase: 'connect',
    cause: /^ECONNREFUSED$/,
    temporary: true
  },
  {
    name: 'the TCP handshake never completes',
    start: async () => {
      const hole = await startBlackhole()
      return { target: hole.url, close: hole.close, pool: { timeouts: { connect: 200 } } }
    },
    status: 504,
    error: 'connection_timeout',
    blame: 'network',
    phase: 'connect',
    cause: /^UND_ERR_CONNECT_TIMEOUT$/,
    temporary: true
  },
  {
    name: 'the connection is reset before any response byte',
    start: answerAfterRequest(null),
    status: 502,
    error: 'connection_terminated',
    blame: 'upstream',
    phase: 'headers',
    cause: /^(ECONNRESET|UND_ERR_SOCKET)$/,
    temporary: true
  },
  {
    name: 'no response headers within timeouts.headers',
    start: async () => {
      const silent = await startTcp(() => {})
      return { target: silent.url, close: silent.close, pool: { timeouts: { headers: 300 } } }
    },
    status: 504,
    error: 'http_response_timeout',
    blame: 'upstream',
    phase: 'headers',
    cause: /^UND_ERR_HEADERS_TIMEOUT$/,
    temporary: true
  },
  {
    name: 'the answer is not HTTP',
    start: answerAfterRequest("-ERR unknown command 'GET'\r\n"),
    status: 502,
    error: 'http_protocol_error',
    blame: 'upstream',
    phase: 'headers',
    cause: /^(HTTPParserError|HPE_\w+)$/,
    temporary: false
  },
  {
    name: 'the status is one HTTP does not have',
    start: answerAfterRequest('HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nok'),
    status: 502,
    error: 'http_protocol_error',
    blame: 'upstream',
    phase: 'headers',
    cause: /^HPE_INVALID_STATUS$/,
    temporary: false
  },
  {
    name: 'the response framing contradicts itself (two Content-Lengths)',
    start: answerAfterRequest('HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok'),
    status: 502,
    error: 'http_protocol_error',
    blame: 'upstream',
    phase: 'headers',
    cause: /^UND_ERR_RES_CONTENT_LENGTH_MISMATCH$/,
    temporary: false
  },
  {
    name: 'the response header section is too large',
    start: async () => {
      const u = await startUpstream('big', (_req, res) => { res.setHeader('x-huge', 'a'.repeat(20 * 1024)); res.end('ok') })
      return { target: u.url, close: u.close }
    },
    status: 502,
    error: 'http_response_header_section_size',
    blame: 'upstream',
    phase: 'headers',
    cause: /^UND_ERR_HEADERS_OVERFLOW$/,
    temporary: false
  },
  {
    name: 'an https target speaks plain HTTP',
    start: async () => {
      const u = await startUpstream('plain')
      return { target: u.url.replace('http:', 'https:'), close: u.close }
    },
    status: 502,
    error: 'tls_protocol_error',
    blame: 'network',
    phase: 'tls',
    cause: /^(EPROTO|ERR_SSL_\w+)$/,
    temporary: false
  },
  {
    name: 'the certificate is self-signed',
    start: async () => {
      const tls = await selfSignedCert()
      if (tls === null) return null
      const u = await startHttpsUpstream(tls, (_req, res) => res.end('you should not see this'))
      return { target: u.url, close: u.close }
    },
    status: 502,
    error: 'tls_certificate_error',
    blame: 'network',
    phase: 'tls',
    cause: /^(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)$/,
    temporary: false
  }
]

const ALL_MEMBERS = ['type', 'title', 'status', 'detail', 'instance', 'error', 'blame', 'phase', 'requestId', 'timestamp', 'temporary', 'hint', 'pool', 'target', 'cause', 'attempts']
const PUBLIC_MEMBERS = ALL_MEMBERS.slice(0, 12)
/** System and library codes a public answer must never show. */
const CODE_PATTERN = /\b(E[A-Z]{3,}|UND_ERR_\w+|HPE_\w+|ERR_\w+|HTTPParserError|[A-Z_]*CERT[A-Z_]*)\b/

async function gatewayFor (t: { teardown: (fn: () => unknown) => void }, target: string, pool: Partial<UpstreamOptions['pools'][string]> | undefined, expose: 'full' | 'public'): Promise<Gateway> {
  // One try, so each row is seen alone (retries have tests of their own).
  return await startGateway(t, { pools: { shop: { retry: { retries: 0 }, ...pool, targets: [target] } }, routes: [{ prefix: '/shop', pool: 'shop' }], errors: { expose } })
}

for (const scenario of scenarios) {
  t.test(`${scenario.error}: ${scenario.name}`, async (t) => {
    const fault = await scenario.start()
    if (fault === null) {
      t.plan(0, 'SKIPPED: openssl is not installed, so no certificate can be made for this test')
      return
    }
    t.teardown(fault.close)
    const targetHostPort = fault.target.replace(/^https?:\/\//, '')
    const port = targetHostPort.split(':')[1]!

    t.test('problem+json, headers and the one log record (full exposure)', async (t) => {
      const gw = await gatewayFor(t, fault.target, fault.pool, 'full')
      const res = await gw.request('/shop/cart?id=1', { headers: { accept: 'application/json' } })
      const problem = await res.body.json() as Problem
      t.equal(res.statusCode, scenario.status)
      t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
      t.equal(res.headers['cache-control'], 'no-store')
      t.equal(res.headers['x-request-id'], problem.requestId)
      const cause = (problem.cause ?? scenario.error).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
      const members = proxyStatus(res.headers['proxy-status'])
      t.equal(members.length, 1, 'one Proxy-Status member, the gateway\'s')
      t.same(Object.keys(members[0]!.params), ['error', 'details', 'next-hop'])
      t.match(members[0], {
        proxy: 'fastify-upstream',
        params: { error: scenario.error, details: new RegExp(`^${scenario.phase} ${cause}(; .+)?$`), 'next-hop': targetHostPort }
      }, 'details: the phase, the cause, then any note')
      t.same(Object.keys(problem), ALL_MEMBERS)
      t.match(problem, {
        type: `urn:fastify-upstream:error:${scenario.error}`,
        status: scenario.status,
        instance: '/shop/cart?id=1',
        error: scenario.error,
        blame: scenario.blame,
        phase: scenario.phase,
        temporary: scenario.temporary,
        pool: 'shop',
        target: targetHostPort,
        cause: scenario.cause
      })
      t.ok(problem.title.length > 0 && problem.detail.length > 0 && problem.hint.length > 0)
      t.ok(Date.parse(problem.timestamp) > 0)
      t.equal(problem.attempts!.length, 1)
      t.match(problem.attempts![0], { target: targetHostPort, error: scenario.error, cause: scenario.cause, phase: scenario.phase })

      const records = gw.logs.filter((r) => r.reqId === problem.requestId)
      const failures = records.filter((r) => r.error !== undefined)
      t.equal(failures.length, 1, 'exactly one failure record')
      t.match(failures[0], {
        level: 50,
        method: 'GET',
        url: '/shop/cart?id=1',
        status: scenario.status,
        error: scenario.error,
        blame: scenario.blame,
        phase: scenario.phase,
        pool: 'shop',
        target: targetHostPort,
        cause: scenario.cause,
        attempts: [{ target: targetHostPort, error: scenario.error }]
      })
      t.type(failures[0]!.ms, 'number')
      t.match(failures[0]!.msg, new RegExp(`^${scenario.status} ${scenario.error}: shop target ${targetHostPort.replace('.', '\\.')}: `))
      t.same(records.filter((r) => r.level >= 40 && r.error === undefined), [], 'no other warning or error line for this request')
    })

    t.test('text for curl, and an HTML page that escapes a hostile URL', async (t) => {
      const gw = await gatewayFor(t, fault.target, fault.pool, 'full')
      const text = await gw.request('/shop/x')
      t.equal(text.headers['content-type'], 'text/plain; charset=utf-8')
      const body = await text.body.text()
      t.match(body, new RegExp(`^${scenario.status} `))
      t.match(body, `error: ${scenario.error} (blame: ${scenario.blame}, phase: ${scenario.phase})`)
      const html = await gw.request('/shop/%3Cscript%3Ealert(1)%3C/script%3E', { headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } })
      t.equal(html.statusCode, scenario.status)
      t.equal(html.headers['content-type'], 'text/html; charset=utf-8')
      const page = await html.body.text()
      t.notMatch(page, /<script/i, 'no script element, reflected or otherwise')
      t.match(page, String(scenario.status))
      t.match(page, html.headers['x-request-id'] as string)
    })

    t.test('public exposure leaks no address, port or code, in body or headers', async (t) => {
      const gw = await gatewayFor(t, fault.target, fault.pool, 'public')
      for (const accept of ['application/json', 'text/html', 'text/plain']) {
        const res = await gw.request('/shop/x', { headers: { accept } })
        t.equal(res.statusCode, scenario.status)
        const body = await res.body.text()
        const headers = JSON.stringify(res.headers)
        for (const [what, text] of [['body', body], ['headers', headers]] as const) {
          t.notOk(text.includes('127.0.0.1'), `${accept} ${what}: no upstream address`)
          t.notOk(new RegExp(`\\b${port}\\b`).test(text), `${accept} ${what}: no upstream port`)
          t.notMatch(text, CODE_PATTERN, `${accept} ${what}: no system or library code`)
        }
        if (accept === 'application/json') t.same(Object.keys(JSON.parse(body) as object), PUBLIC_MEMBERS)
      }
      t.equal(gw.failures().length, 3, 'the log still has everything, once per request')
      t.equal(gw.failures()[0]!.target, targetHostPort)
    })
  })
}

t.test('the body breaks after the headers: the client connection is cut and one record says why', async (t) => {
  const u = await startUpstream('partial', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' })
    res.write('{"orders":[{"id":1},')
    setTimeout(() => res.destroy(), 20)
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }] })
  const res = await gw.request('/shop/orders')
  t.equal(res.statusCode, 200)
  await t.rejects(res.body.text(), 'a truncated body is an error for the client, never a silent short read')
  await waitFor(() => gw.failures().length > 0, 30_000, 'the failure record')
  const [record, ...others] = gw.failures()
  t.same(others, [])
  t.match(record, { level: 50, status: 200, error: 'http_response_incomplete', blame: 'upstream', phase: 'body', attempts: [{ error: 'http_response_incomplete', status: 200 }] })
  t.match(record!.msg, /the client connection was cut/)
  t.same(gw.logs.filter((r) => r.level >= 40 && r.error === undefined), [], 'no duplicate warning or error from Fastify')
  // Fastify's own lines for the request are its usual 'incoming request' and nothing about the cut.
  t.same(gw.logs.filter((r) => r.reqId === record!.reqId && r.error === undefined).map((r) => r.msg), ['incoming request'])
})

t.test('a request that loops back to this gateway is stopped', async (t) => {
  // A gateway whose target is itself: the port is held first (refusing), then handed to the gateway.
  const refusing = await startRefusing()
  const port = refusing.port
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(JSON.parse(line) as LogRecord) } } } })
  const logs: LogRecord[] = []
  t.teardown(async () => { await app.close() })
  await app.register(upstream, { pools: { self: { targets: [`http://127.0.0.1:${port}`], retry: { retries: 0 } } }, routes: [{ prefix: '/self', pool: 'self', rewritePrefix: '/self' }] })
  await refusing.close()
  await app.listen({ port, host: '127.0.0.1' })
  const res = await request(`http://127.0.0.1:${port}/self/x`, { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 502)
  t.match(await res.body.json(), { error: 'proxy_loop_detected', blame: 'gateway', phase: 'route' })
  t.match(proxyStatus(res.headers['proxy-status']), [
    { proxy: 'fastify-upstream', params: { error: 'proxy_loop_detected' } },
    { proxy: 'fastify-upstream', params: { 'received-status': 502 } }
  ], 'the second pass stopped it; the first passed its answer on')
  t.equal(proxyStatus(res.headers['proxy-status']).length, 2)
  const loops = logs.filter((r) => r.error === 'proxy_loop_detected')
  t.equal(loops.length, 1, 'one record, from the pass that saw its own pseudonym')
  t.equal(loops[0]!.level, 50)
})

t.test('a client cannot stop its own request by sending the gateway\'s public name in Via', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }] })
  const res = await gw.request('/shop/x', { headers: { via: '1.1 edge, 1.1 fastify-upstream' } })
  t.equal(res.statusCode, 200)
  const seen = (await res.body.json() as { headers: Record<string, string> }).headers
  t.match(seen.via, /^1\.1 edge, 1\.1 fastify-upstream, 1\.1 fastify-upstream-[\w-]{12}$/, 'forwarded as an ordinary Via entry')
  t.same(gw.failures(), [])
})

t.test('Proxy-Status details with quotes and backslashes parse back exactly (RFC 9651 sf-string escaping)', async (t) => {
  const silent = await startTcp(() => {})
  t.teardown(silent.close)
  // Default options but for retry.on: the note of a timed-out try quotes the condition.
  const gw = await startGateway(t, {
    pools: { shop: { targets: [silent.url], retry: { on: ['connect-failure'] }, timeouts: { headers: 100 } } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    errors: { expose: 'full' }
  })
  const res = await gw.request('/shop/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 504)
  await res.body.dump()
  t.match(res.headers['proxy-status'], /details="[^"]*\\"timeout\\" is not in retry\.on"/, 'the quotes are escaped on the wire')
  t.same(proxyStatus(res.headers['proxy-status']), [{
    proxy: 'fastify-upstream',
    params: { error: 'http_response_timeout', details: 'headers UND_ERR_HEADERS_TIMEOUT; not retried: "timeout" is not in retry.on', 'next-hop': silent.url.slice('http://'.length) }
  }])
})

t.test('HEAD gets the error headers without a body', async (t) => {
  const gw = await startGateway(t, { pools: { shop: { targets: [await deadTarget(t)] } }, routes: [{ prefix: '/shop', pool: 'shop' }] })
  const res = await gw.request('/shop/x', { method: 'HEAD', headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 502)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'connection_refused' } })
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(await res.body.text(), '')
})

t.test('a client that goes away is logged once at info as client_aborted, never as a 5xx', async (t) => {
  const silent: Running = await startTcp(() => {})
  t.teardown(silent.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [silent.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }] })
  const controller = new AbortController()
  const pending = gw.request('/shop/x', { signal: controller.signal }).catch((err: Error) => err)
  await waitFor(() => silent.hits > 0, 30_000, 'the request to reach the upstream')
  controller.abort()
  await pending
  await waitFor(() => gw.logs.some((r) => r.error === 'client_aborted'), 30_000, 'the client_aborted record')
  const aborted = gw.logs.filter((r) => r.error === 'client_aborted')
  t.equal(aborted.length, 1)
  t.match(aborted[0], { level: 30, blame: 'client', pool: 'shop' })
  t.same(gw.failures(), [], 'no failure record')
  t.same(gw.logs.filter((r) => r.level >= 40), [], 'nothing at warn or above')
})

t.test('upstream error statuses pass through with received-status; their own Proxy-Status is kept', async (t) => {
  const u = await startUpstream('sad', (_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain', 'proxy-status': 'inner-proxy; error=connection_refused', 'retry-after': '7' })
    res.end('the service is in maintenance')
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }] })
  const res = await gw.request('/shop/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 503)
  t.equal(await res.body.text(), 'the service is in maintenance', 'untouched')
  t.same(proxyStatus(res.headers['proxy-status']), [
    { proxy: 'inner-proxy', params: { error: 'connection_refused' } },
    { proxy: 'fastify-upstream', params: { 'received-status': 503 } }
  ], 'ours comes last')
  t.same(gw.failures(), [], 'an upstream answer is not a gateway failure')
})

t.test('errors.intercept replaces listed upstream statuses with the gateway page', async (t) => {
  const u = await startUpstream('sad', (req, res) => {
    res.writeHead(req.url === '/teapot' ? 418 : 503, { 'content-type': 'text/plain', 'retry-after': '7' })
    res.end('internal stack trace the public must not see')
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }], errors: { intercept: [503], expose: 'public' } })
  const res = await gw.request('/shop/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 503, 'the status stays')
  t.equal(res.headers['retry-after'], '7')
  t.same(proxyStatus(res.headers['proxy-status']), [{ proxy: 'fastify-upstream', params: { details: 'Service reported an error', 'received-status': 503 } }], 'no error parameter: the gateway did not fail')
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 503, error: 'upstream_error_status', blame: 'upstream' })
  t.notMatch(JSON.stringify(problem), /stack trace/)
  const teapot = await gw.request('/shop/teapot')
  t.equal(teapot.statusCode, 418)
  t.equal(await teapot.body.text(), 'internal stack trace the public must not see', 'statuses not listed pass through')
})

t.test('errors.render replaces the page with the application\'s own', async (t) => {
  const gw = await startGateway(t, {
    pools: { shop: { targets: [await deadTarget(t)] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    errors: { render: (problem) => `<h1>Sorry (${String(problem.status)} ${String(problem.error)})</h1>` }
  })
  const res = await gw.request('/shop/x', { headers: { accept: 'text/html' } })
  t.equal(res.statusCode, 502)
  t.equal(res.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(await res.body.text(), '<h1>Sorry (502 connection_refused)</h1>')
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'connection_refused' } }, 'the headers are still the gateway\'s')
})

t.test('errors.expose as a function decides per request', async (t) => {
  const gw = await startGateway(t, {
    pools: { shop: { targets: [await deadTarget(t)] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    errors: { expose: (request) => request.headers['x-debug'] === 'yes' }
  })
  const open = await (await gw.request('/shop/x', { headers: { accept: 'application/json', 'x-debug': 'yes' } })).body.json() as Problem
  const closed = await (await gw.request('/shop/x', { headers: { accept: 'application/json' } })).body.json() as Problem
  t.equal(open.cause, 'ECONNREFUSED')
  t.equal(closed.cause, undefined)
})
