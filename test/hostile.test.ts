// Hostile input, on raw sockets, against a gateway with public exposure in front of an upstream
// that records whatever reaches it. Each case: the exact answer, in the gateway's format; one
// log record where one is due; nothing internal leaked; nothing forwarded when nothing should be;
// the process still serving.
import t from 'tap'
import net from 'node:net'
import http from 'node:http'
import { once } from 'node:events'
import type { FastifyServerOptions } from 'fastify'
import { clientErrorHandler, frameworkErrors, requestIdFrom, type UpstreamOptions } from '../lib/index.js'
import { startGateway, waitFor, type Gateway } from './helpers/gateway.js'
import { startTcp, startHttpsUpstream, privateCa, selfSignedCert, type Running } from './helpers/servers.js'
import { ourProxyStatus } from './helpers/proxy-status.js'

type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

interface Seen { method: string, url: string, headers: http.IncomingHttpHeaders, bytes: number }

/** An upstream that records every request it gets (as far as it got) and echoes it as JSON. */
async function startRecorder (t: Tap): Promise<Running & { seen: Seen[] }> {
  const seen: Seen[] = []
  const server = http.createServer((req, res) => {
    const entry: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, bytes: 0 }
    seen.push(entry)
    req.on('data', (chunk: Buffer) => { entry.bytes += chunk.length })
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(entry))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${port}`, port, hits: 0, connections: 0, seen, close: async () => {} }
}

/** The gateway as the README recommends it for the internet, with `routes: /api → /v1`. */
async function hostileGateway (t: Tap, target: string, fastify: FastifyServerOptions = {}, pool: Partial<UpstreamOptions['pools'][string]> = {}): Promise<Gateway> {
  return await startGateway(t, {
    pools: { p: { targets: [target], ...pool } },
    routes: [{ prefix: '/api', pool: 'p', rewritePrefix: '/v1', bodyLimit: 1000 }],
    errors: { expose: 'public' }
  }, { clientErrorHandler, frameworkErrors, ...fastify })
}

interface Raw {
  status: number
  headers: Record<string, string>
  body: string
  /** The whole answer as sent, head and body. */
  text: string
  /** The gateway closed the connection (within `ms`). */
  closed: boolean
}

/** Writes `bytes` as they are (in `pieces`, if given) and reads until the gateway closes or `ms` pass. */
async function raw (url: string, bytes: string | string[], ms = 3000): Promise<Raw> {
  const socket = net.connect(Number(new URL(url).port), '127.0.0.1')
  socket.on('error', () => {})
  await once(socket, 'connect')
  for (const piece of Array.isArray(bytes) ? bytes : [bytes]) socket.write(piece, 'latin1')
  let text = ''
  socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms)
    socket.once('close', () => { clearTimeout(timer); resolve(true) })
  })
  socket.destroy()
  return { ...parse(text), text, closed }
}

function parse (text: string): Pick<Raw, 'status' | 'headers' | 'body'> {
  const split = text.indexOf('\r\n\r\n')
  const [statusLine = '', ...lines] = (split < 0 ? text : text.slice(0, split)).split('\r\n')
  const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
  return { status: Number(statusLine.split(' ')[1]), headers, body: split < 0 ? '' : text.slice(split + 4) }
}

/** Nothing internal: no address, port, system or library code, stack trace. */
function leaksNothing (t: Tap, text: string, ports: number[], what: string): void {
  t.notMatch(text, /127\.0\.0\.1|localhost/, `${what}: no address`)
  for (const port of ports) t.notOk(text.includes(String(port)), `${what}: no port number`)
  t.notMatch(text, /\bE[A-Z]{3,}\b|UND_ERR|HPE_|ERR_|FST_/, `${what}: no system or library code`)
  t.notMatch(text, /\n\s+at [\w.<>]+ \(|\.[jt]s:\d+/, `${what}: no stack trace`)
}

/** The gateway's answer for a client fault: status, format, Proxy-Status, no-store, nosniff. */
function gatewayAnswer (t: Tap, res: Raw, status: number): void {
  t.equal(res.status, status, `status ${status}`)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_error' } }, 'the gateway\'s Proxy-Status')
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers['x-content-type-options'], 'nosniff')
}

/** Exactly one failure record, at `level`, with `fields`. */
function oneRecord (t: Tap, gw: Gateway, fields: Record<string, unknown>, level = 40): void {
  const failures = gw.failures()
  t.equal(failures.length, 1, 'exactly one failure record')
  t.match(failures[0], { level, ...fields })
}

t.test('request smuggling and malformed framing: 400, connection closed, nothing upstream', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const head = 'POST /api/x HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\n'
  const cases: Array<[string, string]> = [
    ['CL and TE', `${head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['TE then CL', `${head}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`],
    ['two differing Content-Lengths', `${head}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`],
    ['two equal Content-Lengths', `${head}Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd`],
    ['Content-Length as a list', `${head}Content-Length: 4, 4\r\n\r\nabcd`],
    ['Transfer-Encoding: chunked, identity', `${head}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`],
    ['Transfer-Encoding: identity alone', `${head}Transfer-Encoding: identity\r\n\r\nabcd`],
    ['space before the colon', `${head}Content-Length : 4\r\n\r\nabcd`],
    ['obs-fold', `${head}X-Folded: a\r\n b\r\nContent-Length: 4\r\n\r\nabcd`],
    ['a chunk size that is not hex', `${head}Transfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n`],
    ['a chunk size that overflows', `${head}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabcd\r\n0\r\n\r\n`],
    ['bare LF line ends', 'GET /api/x HTTP/1.1\nHost: gw\nAccept: application/json\n\n'],
    ['bare CR in a header value', `${head}X-A: a\rb\r\nContent-Length: 0\r\n\r\n`],
    ['NUL in a header value', `${head}X-A: a\0b\r\nContent-Length: 0\r\n\r\n`],
    ['LF inside a header value', `${head}X-A: a\nInjected: yes\r\nContent-Length: 0\r\n\r\n`],
    ['NUL in the path', 'GET /api/x\0y HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\n\r\n'],
    ['a space in the path', 'GET /api/x y HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\n\r\n'],
    ['an unknown HTTP version', 'GET /api/x HTTP/1.7\r\nHost: gw\r\nAccept: application/json\r\n\r\n']
  ]
  for (const [name, bytes] of cases) {
    await t.test(name, async (t) => {
      gw.logs.length = 0
      const res = await raw(gw.url, bytes)
      gatewayAnswer(t, res, 400)
      t.ok(res.closed, 'the connection is closed')
      t.equal(res.headers.connection, 'close')
      t.match(res.headers['content-type'], /^application\/problem\+json/)
      t.match(JSON.parse(res.body), { status: 400, error: 'http_request_error', blame: 'client' })
      leaksNothing(t, res.text, [up.port], 'the answer')
      oneRecord(t, gw, { status: 400, error: 'http_request_error', blame: 'client' })
      t.same(up.seen, [], 'nothing reached the upstream')
    })
  }
  // The gateway still serves.
  t.equal((await gw.request('/api/ok')).statusCode, 200)
})

t.test('HTTP/1.1 without Host: Node answers 400 itself (requireHostHeader), before Fastify', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const res = await raw(gw.url, 'GET /api/x HTTP/1.1\r\nAccept: application/json\r\n\r\n')
  t.equal(res.status, 400)
  t.ok(res.closed, 'the connection is closed')
  t.same(up.seen, [], 'nothing reached the upstream')
})

t.test('a duplicate Host is refused with 400 in the gateway\'s format, and closes the connection', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  for (const hosts of [['a.example', 'b.example'], ['a.example', 'a.example']]) {
    gw.logs.length = 0
    const res = await raw(gw.url, `GET /api/x HTTP/1.1\r\n${hosts.map((host) => `Host: ${host}\r\n`).join('')}Accept: application/json\r\n\r\n`)
    gatewayAnswer(t, res, 400)
    t.ok(res.closed, 'the connection is closed')
    t.equal(res.headers.connection, 'close')
    t.match(JSON.parse(res.body), { status: 400, error: 'http_request_error', detail: 'The request has more than one Host header.' })
    leaksNothing(t, res.text, [up.port], 'the answer')
    oneRecord(t, gw, { status: 400, error: 'http_request_error', cause: 'FST_UPSTREAM_DUPLICATE_HOST' })
    t.same(up.seen, [], 'nothing reached the upstream')
  }
  const fine = await raw(gw.url, 'GET /api/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n')
  t.equal(fine.status, 200, 'one Host is fine')
})

t.test('paths through prefix rewriting never escape the rewritten prefix upstream', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const paths = [
    '/api/../admin', '/api/x/../../admin', '/api/%2e%2e/admin', '/api/%2E%2E/%2e%2e/admin', '/api/..%2fadmin',
    '/api/..%2Fadmin', '/api/%2e%2e%2fadmin', '/api/..%5cadmin', '/api/..\\admin', '/api/\\..\\admin', '/api//evil.example/x',
    '/api///evil.example', '/api/%2f%2fevil.example', '/api/%00', '/api/x%00/../../admin', '/api/.%2e/admin', '/api/%252e%252e/admin',
    '/api/x/..;/admin', '/api/%c0%ae%c0%ae/admin'
  ]
  for (const path of paths) {
    const before = up.seen.length
    const res = await raw(gw.url, `GET ${path} HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nConnection: close\r\n\r\n`)
    if (up.seen.length > before) {
      const upstreamPath = up.seen.at(-1)!.url
      t.ok(withinPrefix(upstreamPath, '/v1'), `${path} reached the upstream as ${upstreamPath}, inside /v1`)
      t.equal(res.status, 200)
    } else {
      t.ok(res.status === 400 || res.status === 404, `${path} was refused (${res.status})`)
      t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_error' } }, `${path}: in the gateway's format`)
      leaksNothing(t, res.text, [up.port], path)
    }
  }
})

t.test('a path reply-from refuses before any try leaves no timer behind', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const timers = (): number => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length
  const before = timers()
  const res = await raw(gw.url, 'GET /api/x/..;/admin HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nConnection: close\r\n\r\n')
  gatewayAnswer(t, res, 400)
  oneRecord(t, gw, { status: 400 })
  t.ok(timers() <= before, `timers: ${before} before, ${timers()} after (the exchange's total timer is cleared)`)
})

/**
 * Would `path` stay under `prefix` for an upstream that decodes it once, takes `\` for `/` and
 * resolves dot segments? (Decoding twice is that upstream's own bug: `%252e` passes as sent.)
 */
function withinPrefix (path: string, prefix: string): boolean {
  let decoded = path.split('?')[0]!
  try { decoded = decodeURIComponent(decoded) } catch {}
  const resolved: string[] = []
  for (const segment of decoded.replace(/\\/g, '/').split('/')) {
    if (segment === '..') resolved.pop()
    else if (segment !== '.' && segment !== '') resolved.push(segment)
  }
  const path_ = `/${resolved.join('/')}`
  return path_ === prefix || path_.startsWith(`${prefix}/`)
}

t.test('hop-by-hop fields, those named in Connection, and Upgrade: h2c never reach the upstream', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const res = await raw(gw.url, [
    'GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings, X-Secret, close\r\nUpgrade: h2c\r\n',
    'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Secret: s3cret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n',
    'TE: trailers\r\nX-Kept: yes\r\n\r\n'
  ])
  t.equal(res.status, 200)
  const seen = up.seen[0]!.headers
  for (const name of ['upgrade', 'http2-settings', 'x-secret', 'keep-alive', 'proxy-connection', 'te']) t.notOk(name in seen, `${name} was not forwarded`)
  t.not(seen.connection, 'upgrade')
  t.equal(seen['x-kept'], 'yes', 'end-to-end fields are')
})

t.test('a caller\'s request id that is too long or odd is replaced by a generated one, and the replacement logged', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url, { genReqId: requestIdFrom('x-request-id') })
  const bad = ['x'.repeat(129), '<script>alert(1)</script>', 'a"b', 'a b', 'ab\u00e9', '\u00e2\u0080\u00ae-override']
  for (const id of bad) {
    gw.logs.length = 0
    const res = await gw.request('/api/x', { headers: { 'x-request-id': Buffer.from(id, 'latin1').toString('latin1') } })
    const given = res.headers['x-request-id'] as string
    t.match(given, /^[0-9a-f-]{36}$/, `${JSON.stringify(id.slice(0, 20))}: replaced by a generated id`)
    t.equal((await res.body.json() as Seen).headers['x-request-id'], given, 'the upstream got the generated id')
    const notes = gw.logs.filter((r) => r.requestIdHeader === 'x-request-id')
    t.equal(notes.length, 1, 'one record says so')
    t.match(notes[0], { level: 30, reqId: given, length: id.length })
    t.notOk(JSON.stringify(gw.logs).includes(id), 'the refused id is logged nowhere')
  }
  const res = await gw.request('/api/x', { headers: { 'x-request-id': 'Root=1-5e1b4151-5ac6c58d;Parent=53995c3f;Sampled=1' } })
  t.equal(res.headers['x-request-id'], 'Root=1-5e1b4151-5ac6c58d;Parent=53995c3f;Sampled=1', 'a well-formed id is kept')
  await res.body.dump()
})

t.test('reflection: every page escapes what it repeats, and bounds it', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url, { http: { maxHeaderSize: 256 * 1024 } } as FastifyServerOptions)
  const evil = '<script>alert(1)</script>"\'</style><img/src=x/onerror=alert(1)>\u202e'
  const encoded = encodeURIComponent(evil).replace(/'/g, '%27')
  const long = 'a'.repeat(100 * 1024)
  const pages: Array<[string, string]> = [
    ['404', `/nowhere/${evil}`],
    ['404, encoded', `/nowhere/${encoded}`],
    ['framework error', `/api/%zz${evil}`],
    ['413', `/api/${evil}`],
    ['404, 100 KB', `/nowhere/${long}`],
    ['framework error, 100 KB', `/api/%zz${long}`],
    // A space ends the request target: Node's parser refuses it, and clientErrorHandler answers.
    ['malformed request line', `/api/${evil} <b>`]
  ]
  // The raw (unescaped) evil path is refused as a bad request before any route or body limit is
  // reached; escaped, it reaches the router and is a 404.
  const STATUS: Record<string, number> = {
    404: 400, '404, encoded': 404, 'framework error': 400, 413: 400, '404, 100 KB': 404, 'framework error, 100 KB': 400, 'malformed request line': 400
  }
  const TYPE: Record<string, string> = { 'text/html': 'text/html', 'application/json': 'application/problem+json', 'text/plain': 'text/plain' }
  for (const [name, path] of pages) {
    const wire = Buffer.from(path, 'utf8').toString('latin1')
    for (const accept of ['text/html', 'application/json', 'text/plain']) {
      const body = name.startsWith('413') ? `Content-Length: 2000\r\n\r\n${'x'.repeat(2000)}` : '\r\n'
      const res = await raw(gw.url, `${name.startsWith('413') ? 'POST' : 'GET'} ${wire} HTTP/1.1\r\nHost: gw\r\nAccept: ${accept}\r\nConnection: close\r\n${body}`)
      const what = `${name}, ${accept}`
      t.equal(res.status, STATUS[name], `${what}: status`)
      t.equal((res.headers['content-type'] ?? '').split(';')[0], TYPE[accept], `${what}: in the format asked for`)
      t.equal(res.headers['x-content-type-options'], 'nosniff', `${what}: nosniff`)
      t.ok(res.body.length < 20 * 1024, `${what}: the page is bounded (${res.body.length} bytes)`)
      t.notOk(Buffer.from(res.body, 'latin1').toString('utf8').includes('\u202e'), `${what}: no raw direction override`)
      const type = res.headers['content-type'] ?? ''
      if (type.startsWith('text/html')) {
        t.match(res.headers['content-security-policy'], /^default-src 'none'; style-src 'unsafe-inline'/, `${what}: a content security policy`)
        t.notMatch(res.body, /<script|<img|<b>/i, `${what}: no reflected element`)
        t.equal(res.body.split('</style>').length, 2, `${what}: only the page's own </style>`)
        t.notMatch(res.body, /"'/, `${what}: quotes escaped`)
      } else if (type.startsWith('application/problem+json')) {
        // JSON is data, not markup: served as problem+json with nosniff, it is never a page.
        const problem = JSON.parse(Buffer.from(res.body, 'latin1').toString('utf8')) as { instance: string, detail: string }
        t.ok(problem.instance.length <= 2049, `${what}: instance bounded`)
        t.ok(problem.detail.length <= 2049, `${what}: detail bounded`)
      } else {
        t.match(type, /^text\/plain/, `${what}: otherwise plain text`)
      }
    }
  }
})

t.test('HTML pages carry a Content-Security-Policy, every answer nosniff: reply path and raw-socket path', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
  const paths: Array<[string, string]> = [
    ['reply path (404)', 'GET /nowhere HTTP/1.1\r\nHost: gw\r\nAccept: text/html\r\nConnection: close\r\n\r\n'],
    ['raw-socket path (clientErrorHandler, 400)', 'GET /api/x HTTP/1.1\r\nHost: gw\r\nAccept: text/html\r\nbad header: x\r\n\r\n']
  ]
  for (const [name, bytes] of paths) {
    const res = await raw(gw.url, bytes)
    t.match(res.headers['content-type'], /^text\/html/, `${name}: HTML`)
    t.equal(res.headers['content-security-policy'], policy, `${name}: the policy`)
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${name}: nosniff`)
  }
  const json = await raw(gw.url, 'GET /nowhere HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nConnection: close\r\n\r\n')
  t.equal(json.headers['x-content-type-options'], 'nosniff')
  t.notOk('content-security-policy' in json.headers, 'no policy on data')
})

t.test('oversized requests answer in the gateway\'s format', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const cases: Array<[string, string, number]> = [
    ['a header section over maxHeaderSize', `GET /api/x HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nCookie: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    ['10 000 small headers', `GET /api/x HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\n${Array.from({ length: 10_000 }, (_, i) => `h${i}: v\r\n`).join('')}\r\n`, 431],
    // Node counts the request line into maxHeaderSize: a URL longer than that is a 431, not a 414.
    ['a 20 KB URL', `GET /api/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\n\r\n`, 431],
    ['a body over the route\'s bodyLimit', `POST /api/x HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nContent-Length: 5000\r\n\r\n${'x'.repeat(5000)}`, 413]
  ]
  for (const [name, bytes, status] of cases) {
    gw.logs.length = 0
    const res = await raw(gw.url, bytes)
    t.test(name, async (t) => {
      gatewayAnswer(t, res, status)
      t.ok(res.closed, 'the connection is closed')
      t.match(JSON.parse(res.body), { status, error: 'http_request_error', blame: 'client' })
      leaksNothing(t, res.text, [up.port], 'the answer')
      oneRecord(t, gw, { status, error: 'http_request_error' })
      t.same(up.seen, [], 'nothing reached the upstream')
    })
  }
  // Within maxHeaderSize, Node keeps the first 1 000 fields (maxHeadersCount 2000 counts names
  // and values) and drops the rest without a word: the upstream gets what the gateway got.
  const many = await raw(gw.url, `GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n${Array.from({ length: 1500 }, (_, i) => `h${i}:v\r\n`).join('')}\r\n`)
  t.equal(many.status, 200)
  const seen = up.seen.at(-1)!.headers
  t.equal(seen.h0, 'v')
  t.equal(seen.h997, 'v')
  t.notOk('h998' in seen, 'fields past the first 1 000 are dropped by Node')
})

// Either option stops it: requestTimeout (the whole request) or, with requestTimeout left at 0
// so long uploads live, Node's headersTimeout (the header section), as the README recommends.
for (const [name, options] of [
  ['requestTimeout', { requestTimeout: 500, http: { connectionsCheckingInterval: 50 } }],
  ['http.headersTimeout', { requestTimeout: 0, http: { headersTimeout: 500, connectionsCheckingInterval: 50 } }]
] as const) {
  t.test(`slowloris: a client trickling its headers is cut by ${name} with 408`, async (t) => {
    const up = await startRecorder(t)
    const gw = await hostileGateway(t, up.url, options as unknown as FastifyServerOptions)
    const socket = net.connect(Number(new URL(gw.url).port), '127.0.0.1')
    socket.on('error', () => {})
    await once(socket, 'connect')
    let text = ''
    socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
    const started = Date.now()
    const line = 'GET /api/x HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nX-Slow: '
    let sent = 0
    const trickle = setInterval(() => { if (!socket.destroyed) socket.write(line[sent++ % line.length]!) }, 50)
    t.teardown(() => clearInterval(trickle))
    await once(socket, 'close')
    clearInterval(trickle)
    const ms = Date.now() - started
    t.ok(ms < 3000, `cut after ${ms} ms (${name} 500)`)
    const res = { ...parse(text), text, closed: true }
    gatewayAnswer(t, res, 408)
    oneRecord(t, gw, { status: 408, cause: 'ERR_HTTP_REQUEST_TIMEOUT' })
    t.same(up.seen, [])
  })
}

/** The gateway's open connections, as its server counts them, once none is left or `ms` passed. */
async function connectionsLeft (gw: Gateway, ms: number): Promise<number> {
  const count = async (): Promise<number> => await new Promise((resolve, reject) => {
    gw.app.server.getConnections((err, n) => { err !== null ? reject(err) : resolve(n) })
  })
  const deadline = Date.now() + ms
  let open = await count()
  while (open > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    open = await count()
  }
  return open
}

t.test('2 000 idle connections get their 408 and are released, also when the client never closes its side', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url, { requestTimeout: 300, http: { connectionsCheckingInterval: 50 } } as FastifyServerOptions)
  const port = Number(new URL(gw.url).port)
  const sockets: net.Socket[] = []
  t.teardown(() => { for (const socket of sockets) socket.destroy() })
  let answered = 0
  let accepted = 0
  gw.app.server.on('connection', () => { accepted++ })
  // In waves the listen backlog (511) holds: past it, the kernel would keep connections the
  // client takes for open away from the gateway for seconds.
  for (let wave = 0; wave < 8; wave++) {
    for (let i = 0; i < 250; i++) {
      // allowHalfOpen: the client keeps its side open after the gateway's FIN, as a hostile one would.
      const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
      socket.on('error', () => {})
      socket.once('data', () => { answered++ })
      sockets.push(socket)
    }
    await waitFor(() => accepted === sockets.length, 5000, 'the wave accepted')
  }
  await waitFor(() => answered === 2000, 15_000, 'every idle connection answered')
  t.equal(await connectionsLeft(gw, 5000), 0, 'the gateway holds none of them')
  t.equal(gw.failures().filter((r) => r.status === 408).length, 2000, 'one record each')
})

t.test('50 malformed requests on connections the client keeps open: every socket is released', async (t) => {
  const up = await startRecorder(t)
  const gw = await hostileGateway(t, up.url)
  const port = Number(new URL(gw.url).port)
  const sockets: net.Socket[] = []
  t.teardown(() => { for (const socket of sockets) socket.destroy() })
  let answered = 0
  for (let i = 0; i < 50; i++) {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => socket.write('GET /api/x HTTP/1.1\r\nbad header: x\r\n\r\n'))
    socket.on('error', () => {})
    socket.once('data', () => { answered++ })
    sockets.push(socket)
  }
  await waitFor(() => answered === 50, 5000, 'every malformed request answered')
  t.equal(await connectionsLeft(gw, 3000), 0, 'the gateway holds none of them')
})

for (const [how, leave] of [['resets', (socket: net.Socket) => socket.resetAndDestroy()], ['closes its side', (socket: net.Socket) => socket.end()]] as const) {
  t.test(`a client that ${how} mid-upload: one info client_aborted record, the target not blamed, the gateway fine`, async (t) => {
    let received = 0
    const up = await startRecorder(t)
    const slow = await startTcp((socket) => { socket.on('data', (chunk: Buffer) => { received += chunk.length }) })
    t.teardown(slow.close)
    const gw = await startGateway(t, {
      pools: { p: { targets: [slow.url] }, ok: { targets: [up.url] } },
      routes: [{ prefix: '/api', pool: 'p', bodyLimit: false }, { prefix: '/ok', pool: 'ok' }],
      errors: { expose: 'public' }
    }, { clientErrorHandler, frameworkErrors })
    const socket = net.connect(Number(new URL(gw.url).port), '127.0.0.1')
    socket.on('error', () => {})
    await once(socket, 'connect')
    socket.write(`POST /api/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: ${10 * 1024 * 1024}\r\n\r\n`)
    socket.write(Buffer.alloc(256 * 1024, 'x'))
    await waitFor(() => received > 64 * 1024, 5000, 'the upload streaming upstream')
    leave(socket)
    await waitFor(() => gw.logs.some((r) => r.error === 'client_aborted'), 5000, 'the abort logged')
    t.equal(await connectionsLeft(gw, 3000), 0, 'the connection is released')
    socket.destroy()
    const aborted = gw.logs.filter((r) => r.error === 'client_aborted')
    t.equal(aborted.length, 1)
    t.match(aborted[0], { level: 30, blame: 'client', pool: 'p' })
    t.same(gw.failures(), [], 'no failure record (no 400 for the unfinished body either)')
    t.match(gw.app.upstream.pool('p').targets()[0], { failures: 0, consecutiveFailures: 0, state: 'healthy' }, 'the target is not blamed')
    t.equal((await gw.request('/ok/x')).statusCode, 200, 'the gateway still serves')
  })
}

/** A raw upstream: answers every request with `answer(socket)`. */
async function rawUpstream (t: Tap, answer: (socket: net.Socket) => void): Promise<Running> {
  const server = await startTcp((socket) => { socket.once('data', () => answer(socket)) })
  t.teardown(server.close)
  return server
}

t.test('hostile upstreams are classified as ERRORS.md says, and the gateway keeps serving', async (t) => {
  const cases: Array<{ name: string, answer: (socket: net.Socket) => void, pool?: Partial<UpstreamOptions['pools'][string]>, status: number | 'cut', error: string }> = [
    {
      name: '10 000 response headers',
      answer: (s) => { s.end(`HTTP/1.1 200 OK\r\n${Array.from({ length: 10_000 }, (_, i) => `h${i}: v\r\n`).join('')}content-length: 0\r\n\r\n`) },
      status: 502,
      error: 'http_response_header_section_size'
    },
    {
      name: 'an invalid status line',
      answer: (s) => { s.end('HTTP/1.1 2000 Fine\r\ncontent-length: 0\r\n\r\n') },
      status: 502,
      error: 'http_protocol_error'
    },
    {
      name: 'not HTTP at all',
      answer: (s) => { s.end('SSH-2.0-OpenSSH_9.6\r\n') },
      status: 502,
      error: 'http_protocol_error'
    },
    {
      name: 'a Content-Length longer than the body',
      answer: (s) => { s.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly twenty bytes...') },
      status: 'cut',
      error: 'http_response_incomplete'
    },
    {
      name: 'an endless body without length that stalls',
      answer: (s) => { s.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nstart of an endless body') },
      pool: { timeouts: { body: 300 } },
      status: 'cut',
      error: 'connection_read_timeout'
    },
    {
      name: 'an endless body without length that never stops',
      answer: (s) => {
        s.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n')
        const timer = setInterval(() => { if (s.writable) s.write('more '.repeat(100)); else clearInterval(timer) }, 5)
        s.on('close', () => clearInterval(timer))
      },
      pool: { timeouts: { body: 300, total: 800 } },
      status: 'cut',
      error: 'http_response_timeout'
    }
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const server = await rawUpstream(t, c.answer)
      const gw = await hostileGateway(t, server.url, {}, { retry: { retries: 0 }, ...c.pool })
      const started = Date.now()
      const res = await gw.request('/api/x', { headers: { accept: 'application/json' } })
      if (c.status === 'cut') {
        await t.rejects(res.body.text(), 'the client sees a cut, never a silent short body')
      } else {
        t.equal(res.statusCode, c.status)
        const text = await res.body.text()
        t.match(JSON.parse(text), { error: c.error })
        leaksNothing(t, text + JSON.stringify(res.headers), [server.port], 'the answer')
      }
      t.ok(Date.now() - started < 5000, 'bounded')
      await waitFor(() => gw.failures().length > 0, 3000, 'the failure record')
      oneRecord(t, gw, { error: c.error }, 50)
    })
  }

  await t.test('a Content-Length shorter than the body: the client gets the declared bytes, and the next request is fine', async (t) => {
    const server = await rawUpstream(t, (s) => { s.end('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n12345 and then garbage that is not a response') })
    const gw = await hostileGateway(t, server.url)
    const first = await gw.request('/api/x')
    t.equal(first.statusCode, 200)
    t.equal(await first.body.text(), '12345')
    const second = await gw.request('/api/x')
    t.equal(second.statusCode, 200)
    t.equal(await second.body.text(), '12345')
  })

  await t.test('an upstream that answers without reading the request body', async (t) => {
    const server = await rawUpstream(t, (s) => {
      s.pause()
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
    })
    const gw = await startGateway(t, {
      pools: { p: { targets: [server.url], retry: { retries: 0 } } },
      routes: [{ prefix: '/api', pool: 'p', bodyLimit: false }],
      errors: { expose: 'public' }
    })
    // Far more than socket buffers hold: the upload cannot finish while nobody reads it.
    const body = Buffer.alloc(8 * 1024 * 1024)
    const res = await gw.request('/api/x', { method: 'POST', body, headers: { accept: 'application/json' } })
    t.equal(res.statusCode, 200, 'its answer is passed on')
    t.equal(await res.body.text(), 'ok')
    t.equal((await gw.request('/api/x')).statusCode, 200, 'and the gateway keeps serving')
  })
})

t.test('upstream TLS: certificates are verified, and a private CA is trusted only when given', async (t) => {
  const pki = await privateCa()
  if (pki === null) {
    t.plan(0, 'SKIPPED: openssl is not installed, so no certificate can be made for this test')
    return
  }
  const self = await selfSignedCert()
  const hello = (_req: http.IncomingMessage, res: http.ServerResponse): void => { res.end('hello over tls') }
  const start = async (pair: { key: string, cert: string }): Promise<Running> => {
    const server = await startHttpsUpstream(pair, hello)
    t.teardown(server.close)
    return server
  }
  const cases: Array<[string, { key: string, cert: string }, Record<string, unknown>, string]> = [
    ['self-signed', self!, {}, 'DEPTH_ZERO_SELF_SIGNED_CERT'],
    ['signed by a CA the gateway was not given', pki.good, {}, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
    ['expired', pki.expired, { ca: pki.ca }, 'CERT_HAS_EXPIRED'],
    ['for another name', pki.wrongName, { ca: pki.ca }, 'ERR_TLS_CERT_ALTNAME_INVALID']
  ]
  for (const [name, pair, tls, cause] of cases) {
    await t.test(`${name}: 502 tls_certificate_error`, async (t) => {
      const server = await start(pair)
      const gw = await hostileGateway(t, server.url, {}, { tls })
      const res = await gw.request('/api/x', { headers: { accept: 'application/json' } })
      t.equal(res.statusCode, 502)
      const text = await res.body.text()
      t.match(JSON.parse(text), { error: 'tls_certificate_error', blame: 'network', phase: 'tls' })
      leaksNothing(t, text, [server.port], 'the answer')
      oneRecord(t, gw, { error: 'tls_certificate_error', cause }, 50)
      t.equal(server.hits, 0, 'no request went over the rejected connection')
    })
  }
  await t.test('tls.ca makes a private CA work', async (t) => {
    const server = await start(pki.good)
    const gw = await hostileGateway(t, server.url, {}, { tls: { ca: pki.ca } })
    const res = await gw.request('/api/x')
    t.equal(res.statusCode, 200)
    t.equal(await res.body.text(), 'hello over tls')
  })
  await t.test('tls.rejectUnauthorized: false works only when set, and says so once at start', async (t) => {
    const server = await start(self!)
    const gw = await hostileGateway(t, server.url, {}, { tls: { rejectUnauthorized: false } })
    const warnings = gw.logs.filter((r) => r.level === 40 && /rejectUnauthorized/.test(r.msg))
    t.equal(warnings.length, 1)
    t.match(warnings[0], { pool: 'p', msg: 'pools.p.tls.rejectUnauthorized is false: the certificates of its https targets are not verified' })
    for (let i = 0; i < 3; i++) t.equal((await gw.request('/api/x')).statusCode, 200)
    t.equal(gw.logs.filter((r) => /rejectUnauthorized/.test(r.msg)).length, 1, 'not repeated per request')
    const strict = await hostileGateway(t, server.url)
    t.same(strict.logs.filter((r) => /rejectUnauthorized/.test(r.msg)), [], 'no warning by default')
  })
})
