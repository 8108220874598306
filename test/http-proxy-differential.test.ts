// The same requests through @fastify/http-proxy and through httpProxy with the same options:
// what the upstream receives and what the client gets must be the same, but for the
// differences the gateway means to make, listed once in INTENDED below.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { once } from 'node:events'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyHttpProxy from '@fastify/http-proxy'
import { Agent, request, type Dispatcher } from 'undici'
import WebSocket, { WebSocketServer } from 'ws'
import { httpProxy, type HttpProxyOptions } from '../lib/index.js'
import { opensslMissing, selfSignedCert, startHttpsUpstream } from './helpers/servers.js'

/**
 * Every difference between the two, on purpose. Everything not named here must be equal.
 * - Upstream request headers: the gateway adds the forwarding fields, its Via pseudonym and the
 *   request id (docs/forwarding.md); @fastify/http-proxy adds none of them.
 * - Client response headers: the gateway adds Via, Proxy-Status (received-status) and the
 *   request id.
 * - Query strings: @fastify/http-proxy parses and re-encodes them (`a%20b=c+d` → `a%20b=c%20d`);
 *   the gateway passes them byte for byte. Compared decoded, and the gateway's raw query must be
 *   the client's.
 * - A Location that names the upstream's own origin: the gateway rewrites it to the address the
 *   client used (nginx's proxy_redirect default); @fastify/http-proxy passes it as sent.
 * - Failures the gateway answers itself (upstream down): its status (502) and problem body,
 *   where @fastify/http-proxy answers 500 with reply-from's error.
 * - An https upstream with a self-signed certificate: @fastify/reply-from does not verify it
 *   (200); the gateway does (502 tls_certificate_error).
 * - An upstream 503 to a GET: @fastify/reply-from tries it 10 more times (its maxRetriesOn503)
 *   and the client waits for all of them; the gateway passes the 503 on at once (retrying it
 *   is the main plugin's retry.statuses).
 * - A body sent with GET: @fastify/http-proxy drops it (and its Content-Length); the gateway
 *   forwards it as sent, as it does any body of any method.
 * - With a preValidation hook, @fastify/http-proxy parses request bodies with the app's parsers
 *   (so a form body is refused 415, JSON is re-serialized); the gateway streams every body as sent.
 * - A path or method no route serves: the gateway's 404 in its own format (it sets the app's
 *   not-found handler unless the app set one first), Fastify's default JSON 404 with http-proxy.
 * - A rewriter's header set to undefined: the gateway leaves it out, @fastify/http-proxy sends
 *   it empty.
 * - WebSocket handshakes: the gateway forwards every end-to-end header the client sent;
 *   @fastify/http-proxy only the cookie (and ws's own handshake fields).
 */
const INTENDED = {
  upstreamHeaders: ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'forwarded', 'via', 'x-request-id'],
  clientHeaders: ['via', 'proxy-status', 'x-request-id'],
  // Values that differ from run to run or port to port, on either side.
  volatile: ['date', 'host', 'keep-alive']
}

interface Received { method: string, url: string, headers: http.IncomingHttpHeaders, body: string }

interface Upstream { origin: string, received: Received[], close: () => Promise<void> }

/** The upstream both proxies talk to (one each): records each request, answers by path. */
async function startRecordingUpstream (): Promise<Upstream> {
  const received: Received[] = []
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      received.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString() })
      answer(req, res, `http://${req.headers.host!}`)
    })
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (socket, req) => {
    received.push({ method: 'WS', url: req.url!, headers: req.headers, body: '' })
    socket.on('message', (data, binary) => socket.send(binary ? data : `echo: ${String(data)}`))
  })
  const sockets = new Set<Socket>()
  server.on('connection', (socket) => { sockets.add(socket); socket.once('close', () => sockets.delete(socket)) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    received,
    close: async () => {
      for (const client of wss.clients) client.terminate()
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

function answer (req: http.IncomingMessage, res: http.ServerResponse, self: string): void {
  const path = req.url!.split('?')[0]!
  res.setHeader('x-upstream', 'yes')
  res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/; HttpOnly'])
  const status = /\/status\/(\d{3})$/.exec(path)
  if (status !== null) {
    const code = Number(status[1])
    if (code === 301) res.setHeader('location', '/v1/moved/here')
    if (code === 302) res.setHeader('location', `${self}/v1/elsewhere`)
    res.statusCode = code
    res.setHeader('content-type', 'text/plain')
    res.end(`status ${code} body`)
    return
  }
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ method: req.method, url: req.url }))
}

interface Pair {
  /** The app on @fastify/http-proxy, and the one on httpProxy. */
  a: { url: string, upstream: Upstream }
  b: { url: string, upstream: Upstream }
}

interface Teardown { teardown: (fn: () => unknown) => void }

async function listen (t: Teardown, app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => await app.close())
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

/** Two apps with the same options, one on each plugin, each before its own upstream. */
async function pair (t: Teardown, options: (upstream: string) => HttpProxyOptions): Promise<Pair> {
  const upstreamA = await startRecordingUpstream()
  const upstreamB = await startRecordingUpstream()
  t.teardown(upstreamA.close)
  t.teardown(upstreamB.close)
  const a = Fastify()
  // The same options object shape for both; http-proxy's types ask for upstream: string.
  await a.register(fastifyHttpProxy, options(upstreamA.origin) as Parameters<typeof fastifyHttpProxy>[1])
  const b = Fastify()
  await b.register(httpProxy, options(upstreamB.origin))
  return { a: { url: await listen(t, a), upstream: upstreamA }, b: { url: await listen(t, b), upstream: upstreamB } }
}

const client = new Agent({ keepAliveTimeout: 1000 })
t.teardown(async () => await client.close())

interface Answer { status: number, headers: Record<string, string | string[]>, body: string }

async function send (url: string, path: string, options: Partial<Dispatcher.RequestOptions> = {}): Promise<Answer> {
  const res = await request(url + path, { dispatcher: client, ...options } as Dispatcher.RequestOptions)
  return { status: res.statusCode, headers: res.headers as Record<string, string | string[]>, body: await res.body.text() }
}

function without (headers: Record<string, unknown>, names: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !names.includes(name)))
}

/** The query as decoded key/value pairs, in order. */
function decodedQuery (url: string): Array<[string, string]> {
  return [...new URLSearchParams(url.split('?')[1] ?? '')]
}

/** Sends one request through both and compares what their upstreams and their clients saw. */
async function same (t: Test, p: Pair, path: string, options: Partial<Dispatcher.RequestOptions> = {}, tries = { a: 1, b: 1 }): Promise<{ a: Answer, b: Answer, ra: Received | undefined, rb: Received | undefined }> {
  const countA = p.a.upstream.received.length
  const countB = p.b.upstream.received.length
  const a = await send(p.a.url, path, options)
  const b = await send(p.b.url, path, options)
  const ra = p.a.upstream.received[countA]
  const rb = p.b.upstream.received[countB]
  t.equal(p.a.upstream.received.length - countA, tries.a, `${path}: ${tries.a} upstream request(s) from @fastify/http-proxy`)
  t.equal(p.b.upstream.received.length - countB, tries.b, `${path}: ${tries.b} upstream request(s) from httpProxy`)
  if (ra !== undefined && rb !== undefined) {
    t.equal(rb.method, ra.method, `${path}: the upstream gets the same method`)
    t.equal(rb.url.split('?')[0], ra.url.split('?')[0], `${path}: the upstream gets the same path`)
    t.same(decodedQuery(rb.url), decodedQuery(ra.url), `${path}: the upstream gets the same query, decoded`)
    t.same(without(rb.headers, [...INTENDED.upstreamHeaders, ...INTENDED.volatile]), without(ra.headers, INTENDED.volatile), `${path}: the upstream gets the same headers`)
    t.equal(rb.headers.host, new URL(p.b.upstream.origin).host, `${path}: each upstream gets its own Host`)
    t.equal(ra.headers.host, new URL(p.a.upstream.origin).host)
    t.equal(rb.body, ra.body, `${path}: the upstream gets the same body`)
  }
  t.equal(b.status, a.status, `${path}: the client gets the same status`)
  t.same(without(b.headers, [...INTENDED.clientHeaders, ...INTENDED.volatile]), without(a.headers, INTENDED.volatile), `${path}: the client gets the same headers`)
  t.equal(b.body, a.body, `${path}: the client gets the same body`)
  return { a, b, ra, rb }
}

t.test('methods with and without bodies, HEAD and custom headers reach the upstream and come back alike', async (t) => {
  const p = await pair(t, (upstream) => ({ upstream, prefix: '/api', rewritePrefix: '/v1' }))
  await same(t, p, '/api/items')
  await same(t, p, '/api/items/7', { method: 'HEAD' })
  await same(t, p, '/api/items', { method: 'POST', body: '{"name":"x"}', headers: { 'content-type': 'application/json' } })
  await same(t, p, '/api/items/7', { method: 'PUT', body: 'plain text body', headers: { 'content-type': 'text/plain' } })
  await same(t, p, '/api/items/7', { method: 'PATCH', body: 'a=1&b=2', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  await same(t, p, '/api/items/7', { method: 'DELETE' })
  await same(t, p, '/api/items/7', { method: 'DELETE', body: '{"reason":"gone"}', headers: { 'content-type': 'application/json' } })
  // Intended: a body sent with GET.
  const getWithBody = { method: 'GET', body: 'a body on a GET', headers: { 'content-type': 'text/plain' } } as const
  await send(p.a.url, '/api/items', getWithBody)
  await send(p.b.url, '/api/items', getWithBody)
  t.equal(p.a.upstream.received.at(-1)?.body, '', '@fastify/http-proxy drops the body of a GET')
  t.equal(p.b.upstream.received.at(-1)?.body, 'a body on a GET', 'httpProxy forwards it as sent')
  await same(t, p, '/api/items', { method: 'POST', body: Buffer.from([0, 1, 2, 255]), headers: { 'content-type': 'application/octet-stream' } })
  await same(t, p, '/api/items', { method: 'OPTIONS' })
  await same(t, p, '/api', { headers: { 'x-custom': 'one', 'x-tenant': 'acme', authorization: 'Bearer t0ken', cookie: 'session=abc' } })
})

t.test('queries with repeated and encoded keys reach the upstream alike, and byte for byte through httpProxy', async (t) => {
  const p = await pair(t, (upstream) => ({ upstream, prefix: '/api' }))
  for (const query of ['?a=1&a=2&a=3', '?a%20b=c+d&x=%2F%3F', '?tag=%E2%9C%93&tag=two&empty=&flag']) {
    const { rb } = await same(t, p, `/api/search${query}`)
    t.equal(rb?.url, `/search${query}`, `${query}: the gateway passes the query as sent`)
  }
})

t.test('upstream 3xx, 4xx and 5xx answers reach the client alike', async (t) => {
  const p = await pair(t, (upstream) => ({ upstream, prefix: '/api', rewritePrefix: '/v1' }))
  const moved = await same(t, p, '/api/status/301')
  t.equal(moved.b.headers.location, '/api/moved/here', 'a relative Location is mapped back to the prefix by both')
  await same(t, p, '/api/status/404')
  await same(t, p, '/api/status/500')
  // Intended: reply-from's ten retries of a GET answered 503.
  await same(t, p, '/api/status/503', {}, { a: 11, b: 1 })
  await same(t, p, '/api/status/503', { method: 'POST', body: 'x' })
  await same(t, p, '/api/status/500', { method: 'HEAD' })

  // Intended: an absolute Location naming the upstream's origin.
  const a = await send(p.a.url, '/api/status/302')
  const b = await send(p.b.url, '/api/status/302')
  t.equal(b.status, a.status)
  t.equal(a.headers.location, `${p.a.upstream.origin}/v1/elsewhere`, '@fastify/http-proxy passes the upstream\'s address to the client')
  t.equal(b.headers.location, `${p.b.url}/api/elsewhere`, 'httpProxy rewrites it to the address the client used')
})

t.test('a failing upstream: the gateway\'s answer instead of reply-from\'s (intended)', async (t) => {
  const dead = await startRecordingUpstream()
  await dead.close()
  const a = Fastify()
  await a.register(fastifyHttpProxy, { upstream: dead.origin, prefix: '/api' })
  const b = Fastify()
  await b.register(httpProxy, { upstream: dead.origin, prefix: '/api' })
  const ra = await send(await listen(t, a), '/api/x', { headers: { accept: 'application/json' } })
  const rb = await send(await listen(t, b), '/api/x', { headers: { accept: 'application/json' } })
  t.equal(ra.status, 500, '@fastify/http-proxy: 500')
  t.equal(rb.status, 502, 'httpProxy: 502')
  t.equal(rb.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(JSON.parse(rb.body).error, 'connection_refused')
  t.match(rb.headers['proxy-status'], /error=connection_refused/)
})

t.test('header rewriters, a preHandler, preValidation, config and constraints work alike', async (t) => {
  const p = await pair(t, (upstream) => ({
    upstream,
    prefix: '/api',
    rewritePrefix: '/v1',
    httpMethods: ['GET', 'POST', 'HEAD'],
    config: { tenant: 'acme' },
    constraints: { host: /^127\.0\.0\.1:\d+$/ },
    preHandler: async (request, reply) => {
      if (request.headers['x-deny'] !== undefined) await reply.code(403).send({ denied: true })
    },
    preValidation: (request, _reply, done) => {
      request.headers['x-validated'] = 'yes'
      done()
    },
    replyOptions: {
      rewriteRequestHeaders: (request, { 'x-custom': _dropped, ...headers }) => ({ ...headers, 'x-tenant': String((request.routeOptions.config as { tenant?: string }).tenant) }),
      rewriteHeaders: ({ 'x-upstream': _dropped, ...headers }) => ({ ...headers, 'x-rewritten': 'yes' })
    }
  }))
  const { b, rb } = await same(t, p, '/api/items?a=1', { headers: { 'x-custom': 'dropped', 'x-kept': 'kept' } })
  t.equal(rb?.headers['x-tenant'], 'acme', 'the rewriter reads the route config and adds a header')
  t.equal(rb?.headers['x-custom'], undefined, 'and removes one')
  t.equal(rb?.headers['x-validated'], 'yes', 'the preValidation hook ran before the headers were copied')
  t.equal(b.headers['x-rewritten'], 'yes', 'the response rewriter adds a header')
  t.equal(b.headers['x-upstream'], undefined, 'and removes one')
  await same(t, p, '/api/items', { method: 'POST', body: '{"name":"x"}', headers: { 'content-type': 'application/json' } })
  const denied = await same(t, p, '/api/items', { headers: { 'x-deny': '1' } }, { a: 0, b: 0 })
  t.equal(denied.b.status, 403, 'the preHandler answers without the upstream')

  // Intended: a body the app has no parser for, beside a preValidation hook.
  const form = { method: 'POST', body: 'x=1&y=2', headers: { 'content-type': 'application/x-www-form-urlencoded' } } as const
  t.equal((await send(p.a.url, '/api/items', form)).status, 415, '@fastify/http-proxy refuses a form body when preValidation is set')
  t.equal((await send(p.b.url, '/api/items', form)).status, 200, 'httpProxy streams it to the upstream')
  t.equal(p.b.upstream.received.at(-1)?.body, 'x=1&y=2')

  // Intended: what no route serves (a method left out, a constraint not met) gets the gateway's 404.
  for (const options of [{ method: 'DELETE' }, { headers: { host: 'example.com' } }] as const) {
    const a = await send(p.a.url, '/api/items', options)
    const b = await send(p.b.url, '/api/items', { ...options, headers: { ...('headers' in options ? options.headers : {}), accept: 'application/json' } })
    t.equal(a.status, 404)
    t.equal(b.status, 404, 'a 404 from both')
    t.equal(JSON.parse(b.body).error, 'http_request_error', 'the gateway\'s in its own format')
  }
})

t.test('a self-signed upstream: served by @fastify/http-proxy, refused by httpProxy (intended)', { skip: opensslMissing ?? false }, async (t) => {
  const upstream = await startHttpsUpstream((await selfSignedCert())!, (_req, res) => res.end('from a self-signed upstream'))
  t.teardown(upstream.close)
  const a = Fastify()
  await a.register(fastifyHttpProxy, { upstream: upstream.url })
  const b = Fastify()
  await b.register(httpProxy, { upstream: upstream.url })
  const ra = await send(await listen(t, a), '/', { headers: { accept: 'application/json' } })
  const rb = await send(await listen(t, b), '/', { headers: { accept: 'application/json' } })
  t.equal(ra.status, 200, '@fastify/http-proxy does not verify the certificate')
  t.equal(rb.status, 502, 'httpProxy does')
  t.equal(JSON.parse(rb.body).error, 'tls_certificate_error')
})

t.test('a WebSocket echo works alike through both', async (t) => {
  const p = await pair(t, (upstream) => ({ upstream, prefix: '/ws', rewritePrefix: '/socket', websocket: true }))
  for (const [name, side] of [['@fastify/http-proxy', p.a], ['httpProxy', p.b]] as const) {
    const before = side.upstream.received.length
    const ws = new WebSocket(`${side.url.replace('http', 'ws')}/ws/room?id=7`, { headers: { cookie: 'session=abc' } })
    t.teardown(() => ws.terminate())
    await once(ws, 'open')
    ws.send('hello')
    const [reply] = await once(ws, 'message') as [Buffer]
    t.equal(String(reply), 'echo: hello', `${name}: the echo comes back`)
    ws.send(Buffer.from([1, 2, 3]), { binary: true })
    const [binary] = await once(ws, 'message') as [Buffer]
    t.same([...binary], [1, 2, 3], `${name}: binary frames pass untouched`)
    const handshake = side.upstream.received[before]!
    t.equal(handshake.url, '/socket/room?id=7', `${name}: the handshake's path is rewritten and its query kept`)
    t.equal(handshake.headers.cookie, 'session=abc', `${name}: the cookie reaches the upstream`)
    ws.close()
    await once(ws, 'close')
  }
})
