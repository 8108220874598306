// Fastify's own answers (no route, bad request, body too large, rate limited) speak the gateway's format too.
import t from 'tap'
import { Readable } from 'node:stream'
import Fastify from 'fastify'
import net from 'node:net'
import { frameworkErrors, clientErrorHandler } from '../lib/index.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import type { Problem } from '../lib/errors/problem.js'
import { proxyStatus, ourProxyStatus } from './helpers/proxy-status.js'

t.test('404: a path no route serves', async (t) => {
  const gw = await startGateway(t, { pools: { shop: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/shop', pool: 'shop' }] })
  const res = await gw.request('/nowhere?x=1', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 404)
  t.equal(res.headers['cache-control'], 'no-store')
  t.same(proxyStatus(res.headers['proxy-status']), [{ proxy: 'fastify-upstream', params: { error: 'http_request_error', details: 'route http_request_error' } }])
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 404, title: 'Not found', error: 'http_request_error', blame: 'client', phase: 'route', temporary: false, detail: 'Nothing is served at this address.' })
  t.match(problem.hint, /No route matches GET \/nowhere: check the path against the routes\[\]\.prefix options/)
  const [record, ...others] = gw.failures()
  t.same(others, [])
  t.match(record, { level: 40, status: 404, error: 'http_request_error', blame: 'client' })
  t.same(gw.logs.filter((r) => r.level >= 40 && r.error === undefined), [], 'no second line from Fastify')
})

t.test('404: a method the route does not serve', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', methods: ['GET'] }] })
  const res = await gw.request('/shop/cart', { method: 'DELETE', headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 404)
  const problem = await res.body.json() as Problem
  t.match(problem, { error: 'http_request_error', blame: 'client', pool: 'shop', detail: 'This service does not answer DELETE requests here.' })
  t.match(problem.hint, /does not list DELETE in routes\[\]\.methods/)
  t.equal(u.hits, 0)
})

t.test('400: a path that escapes the route prefix is refused before it is proxied', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', rewritePrefix: '/api' }] })
  const res = await gw.request('/shop/..%2F..%2Fadmin', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 400)
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 400, title: 'Bad request', error: 'http_request_error', blame: 'client', phase: 'route' })
  t.equal(u.hits, 0, 'nothing reached the upstream')
  t.equal(gw.failures().length, 1)
  t.equal(gw.failures()[0]!.level, 40)
})

t.test('429: the global rate limit answers in the gateway format with Retry-After', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    rateLimit: { max: 2, timeWindow: 60000 }
  })
  for (let i = 0; i < 2; i++) t.equal((await gw.request('/shop/x')).statusCode, 200)
  const res = await gw.request('/shop/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 429)
  t.match(res.headers['retry-after'], /^\d+$/)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_denied' } })
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 429, error: 'http_request_denied', blame: 'client', temporary: true })
  t.equal(u.hits, 2)
  t.equal(gw.failures().length, 1)
  t.match(gw.failures()[0], { level: 40, error: 'http_request_denied' })
})

t.test('429: a per-route rate limit applies to its route only', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/limited', pool: 'shop', rateLimit: { max: 1, timeWindow: 60000 } }, { prefix: '/free', pool: 'shop' }]
  })
  t.equal((await gw.request('/limited/x')).statusCode, 200)
  t.equal((await gw.request('/limited/x')).statusCode, 429)
  for (let i = 0; i < 3; i++) t.equal((await gw.request('/free/x')).statusCode, 200)
})

t.test('the app\'s own routes keep their own error handling', async (t) => {
  const gw = await startGateway(t, { pools: { shop: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/shop', pool: 'shop' }] }, {}, (app) => {
    app.get('/own', async () => { throw Object.assign(new Error('mine'), { statusCode: 409 }) })
  })
  const res = await gw.request('/own')
  t.equal(res.statusCode, 409)
  t.match(await res.body.json(), { message: 'mine' }, 'Fastify\'s default handler, not ours')
})

// 413: proxied bodies stream and are never parsed, so the gateway enforces routes[].bodyLimit
// (by default Fastify's own bodyLimit) itself: before anything is sent when the body declares
// its length, and as it streams when it does not.

/** A chunked body (no Content-Length) of `size` bytes, made in 16 KiB pieces as it is read. */
function chunked (size: number): Readable {
  let sent = 0
  return new Readable({
    read () {
      if (sent >= size) return this.push(null)
      const piece = Math.min(16 * 1024, size - sent)
      sent += piece
      this.push(Buffer.alloc(piece, 'x'))
    }
  })
}

t.test('413: a body whose Content-Length is over routes[].bodyLimit never reaches the upstream', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', bodyLimit: 1000 }] })
  const res = await gw.request('/shop/upload', { method: 'POST', body: 'x'.repeat(2000), headers: { accept: 'application/json', 'content-type': 'text/plain' } })
  t.equal(res.statusCode, 413)
  t.equal(res.headers.connection, 'close', 'the unread body is not drained: the connection closes')
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_error' } })
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 413, title: 'Request body too large', error: 'http_request_error', blame: 'client', phase: 'send', temporary: false, detail: 'The request body is larger than this service accepts.' })
  t.match(problem.hint, /declares 2000 bytes \(Content-Length\); the limit for routes with prefix "\/shop" is 1000 bytes \(routes\[\]\.bodyLimit/)
  t.equal(u.hits, 0, 'nothing reached the upstream')
  const [record, ...others] = gw.failures()
  t.same(others, [])
  t.match(record, { level: 40, status: 413, error: 'http_request_error', blame: 'client' })

  const fits = await gw.request('/shop/upload', { method: 'POST', body: 'x'.repeat(1000), headers: { 'content-type': 'text/plain' } })
  t.equal(fits.statusCode, 200, 'a body of exactly the limit passes')
  t.match(await fits.body.json(), { bytes: 1000 })
})

t.test('413: a route with bodyLimit refuses larger bodies; routes without one take any size, whatever Fastify\'s bodyLimit', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/limited', pool: 'shop', bodyLimit: 500 }, { prefix: '/open', pool: 'shop' }]
  }, { bodyLimit: 500 })
  const over = await gw.request('/limited/x', { method: 'POST', body: 'x'.repeat(600), headers: { accept: 'text/plain' } })
  t.equal(over.statusCode, 413)
  t.match(await over.body.text(), /larger than this service accepts/)
  const open = await gw.request('/open/x', { method: 'POST', body: 'x'.repeat(600) })
  t.equal(open.statusCode, 200)
  t.match(await open.body.json(), { bytes: 600 })
})

t.test('413: a chunked body is counted as it is read, before the first byte is sent when it is small', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', bodyLimit: 20_000 }] })
  const res = await gw.request('/shop/x', { method: 'POST', body: chunked(40_000), headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 413)
  const problem = await res.body.json() as Problem
  t.match(problem.hint, /passed 20000 bytes while it was read for replay/)
  t.equal(u.hits, 0, 'read for replay (under 64 KiB) and refused before any try')

  const fits = await gw.request('/shop/x', { method: 'POST', body: chunked(20_000) })
  t.equal(fits.statusCode, 200)
  t.match(await fits.body.json(), { bytes: 20_000 })
})

t.test('413: a large chunked body over the limit is cut mid-stream, and the target is not blamed', async (t) => {
  let upstreamSaw = 0
  const u = await startUpstream('u', (req, res) => {
    req.on('data', (chunk: Buffer) => { upstreamSaw += chunk.length })
    req.on('end', () => res.end('whole'))
  })
  t.teardown(u.close)
  const limit = 256 * 1024
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', bodyLimit: limit }] })
  const res = await gw.request('/shop/x', { method: 'POST', body: chunked(1024 * 1024), headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 413)
  const problem = await res.body.json() as Problem
  t.match(problem, { error: 'http_request_error', status: 413, blame: 'client', phase: 'send' })
  t.match(problem.hint, /passed 262144 bytes while it streamed to 127\.0\.0\.1:\d+, so that upstream request was cut/)
  t.ok(upstreamSaw <= limit, `the upstream saw ${upstreamSaw} bytes, no more than the limit`)
  const [target] = gw.app.upstream.pool('shop').targets()
  t.match(target, { failures: 0, consecutiveFailures: 0, state: 'healthy' }, 'a client\'s oversized body is not the target\'s failure')
  const [record] = gw.failures()
  t.match(record, { status: 413, error: 'http_request_error', attempts: [{ error: 'http_request_error', phase: 'send' }] })
})

t.test('an app that set its own not-found handler first keeps it; proxied routes keep the gateway\'s', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', methods: ['GET'] }] }, {}, (app) => {
    app.setNotFoundHandler(async (_request, reply) => await reply.code(404).send({ mine: true }))
  })
  const unknown = await gw.request('/nowhere')
  t.equal(unknown.statusCode, 404)
  t.same(await unknown.body.json(), { mine: true }, 'the app\'s own handler answers unknown paths')
  t.equal((await gw.request('/shop/x')).statusCode, 200)
  const wrongMethod = await gw.request('/shop/x', { method: 'DELETE', headers: { accept: 'application/json' } })
  t.equal(wrongMethod.statusCode, 404)
  t.match(await wrongMethod.body.json(), { error: 'http_request_error', pool: 'shop' }, 'a route\'s own scope still answers in the gateway format')
})

t.test('a URL Fastify cannot decode answers in the gateway format when the app passes frameworkErrors', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }] }, { frameworkErrors })
  const res = await gw.request('/shop/%zz', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 400)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_error' } })
  t.ok(res.headers['x-request-id'], 'with the request id')
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 400, error: 'http_request_error', blame: 'client', detail: "'/shop/%zz' is not a valid url component." })
  t.equal(u.hits, 0)
  t.equal(gw.failures().length, 1)
  t.match(gw.failures()[0], { level: 40, status: 400, cause: 'FST_ERR_BAD_URL' })
})

t.test('frameworkErrors without the plugin registered leaves Fastify\'s own answer', async (t) => {
  const app = Fastify({ frameworkErrors })
  app.get('/x/:id', async () => 'ok')
  t.teardown(async () => { await app.close() })
  const res = await app.inject('/x/%zz')
  t.equal(res.statusCode, 400)
  t.match(res.json(), { code: 'FST_ERR_BAD_URL' })
})

/** Sends raw bytes to `url`'s port and resolves with everything the server sent back. */
async function rawExchange (url: string, bytes: string): Promise<{ status: number, headers: Record<string, string>, body: string }> {
  const { port } = new URL(url)
  const text = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(bytes))
    let received = ''
    socket.on('data', (chunk: Buffer) => { received += chunk.toString('latin1') })
    socket.on('end', () => resolve(received))
    socket.on('error', reject)
    socket.setTimeout(3000, () => socket.destroy(new Error('no answer within 3 s')))
  })
  const [head = '', body = ''] = text.split('\r\n\r\n')
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
  return { status: Number(statusLine.split(' ')[1]), headers, body }
}

t.test('431: a header section over maxHeaderSize answers in the gateway format with clientErrorHandler', async (t) => {
  const gw = await startGateway(t, { pools: { shop: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/shop', pool: 'shop' }] }, { clientErrorHandler })
  const res = await rawExchange(gw.url, `GET /shop/cart HTTP/1.1\r\nhost: a\r\naccept: application/json\r\ncookie: ${'a'.repeat(20_000)}\r\n\r\n`)
  t.equal(res.status, 431)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_error' } })
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers.connection, 'close')
  t.match(res.headers['content-type'], /^application\/problem\+json/)
  const problem = JSON.parse(res.body) as Problem
  t.match(problem, { status: 431, title: 'Request headers too large', error: 'http_request_error', blame: 'client', detail: 'The request headers are larger than this server accepts.', instance: '/shop/cart' })
  t.match(problem.hint, /maxHeaderSize.*oversized cookies/)
  t.equal(problem.requestId, res.headers['x-request-id'])
  const [record, ...others] = gw.failures()
  t.same(others, [])
  t.match(record, { level: 40, status: 431, error: 'http_request_error', cause: 'HPE_HEADER_OVERFLOW', method: 'GET', url: '/shop/cart', reqId: problem.requestId })
})

t.test('a parser fault has no request to ask: an expose function gets the public answer, "full" the full one', async (t) => {
  const oversized = `GET /shop/cart HTTP/1.1\r\nhost: a\r\naccept: application/json\r\ncookie: ${'a'.repeat(20_000)}\r\n\r\n`
  let asked = 0
  const byFunction = await startGateway(t, {
    pools: { shop: { targets: ['http://127.0.0.1:1'] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    errors: { expose: () => { asked++; return true } }
  }, { clientErrorHandler })
  const publicAnswer = await rawExchange(byFunction.url, oversized)
  t.equal(publicAnswer.status, 431)
  const publicProblem = JSON.parse(publicAnswer.body) as Problem
  t.equal(publicProblem.cause, undefined, 'no cause: a function cannot be asked without a request')
  t.equal(publicProblem.pool, undefined)
  t.same(proxyStatus(publicAnswer.headers['proxy-status']), [{ proxy: 'fastify-upstream', params: { error: 'http_request_error', details: 'Request headers too large' } }])
  t.equal(asked, 0, 'the function was not called')

  const full = await startGateway(t, { pools: { shop: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/shop', pool: 'shop' }], errors: { expose: 'full' } }, { clientErrorHandler })
  const fullAnswer = await rawExchange(full.url, oversized)
  t.equal((JSON.parse(fullAnswer.body) as Problem).cause, 'HPE_HEADER_OVERFLOW', 'full exposure shows the cause')
  t.same(proxyStatus(fullAnswer.headers['proxy-status']), [{ proxy: 'fastify-upstream', params: { error: 'http_request_error', details: 'route HPE_HEADER_OVERFLOW' } }])
})

t.test('400: a request Node cannot parse gets text in the gateway format; without the plugin, a bare 400', async (t) => {
  const gw = await startGateway(t, { pools: { shop: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/shop', pool: 'shop' }] }, { clientErrorHandler })
  const res = await rawExchange(gw.url, 'GET /shop/x HTTP/1.1\r\nhost: a\r\nbad header: x\r\n\r\n')
  t.equal(res.status, 400)
  t.match(res.headers['content-type'], /^text\/plain/)
  t.match(res.body, /^400 Bad request\n\nThe request is not valid HTTP\./)
  t.equal(gw.failures().length, 1)

  const bare = Fastify({ clientErrorHandler })
  await bare.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await bare.close() })
  const plain = await rawExchange(`http://127.0.0.1:${(bare.server.address() as { port: number }).port}`, 'GET / HTTP/1.1\r\nbad header: x\r\n\r\n')
  t.equal(plain.status, 400)
  t.equal(plain.body, '')
})
