import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import { proxyStatus } from './helpers/proxy-status.js'

interface Echo { name: string, method: string, url: string, headers: Record<string, string>, bytes: number }

t.test('a route strips its prefix by default and keeps the query string', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'p' }] })
  const res = await gw.request('/api/users/7?sort=name&tag=a&tag=b')
  t.equal(res.statusCode, 200)
  const echo = await res.body.json() as Echo
  t.equal(echo.url, '/users/7?sort=name&tag=a&tag=b')
})

t.test('rewritePrefix maps the route prefix onto the upstream path', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/users', pool: 'p', rewritePrefix: '/v2/users' }] })
  const echo = await (await gw.request('/users/7?x=1')).body.json() as Echo
  t.equal(echo.url, '/v2/users/7?x=1')
})

t.test('methods: listed ones pass with their bodies, others are not routed', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p', methods: ['GET', 'PUT', 'DELETE'] }] })
  const put = await gw.request('/p/x', { method: 'PUT', body: 'twelve bytes', headers: { 'content-type': 'text/plain' } })
  const echo = await put.body.json() as Echo
  t.equal(echo.method, 'PUT')
  t.equal(echo.bytes, 12)
  t.equal(echo.headers['content-type'], 'text/plain')
  t.equal((await (await gw.request('/p/x', { method: 'DELETE' })).body.json() as Echo).method, 'DELETE')
  const post = await gw.request('/p/x', { method: 'POST', body: 'x' })
  t.equal(post.statusCode, 404, 'POST is not a method of this route')
  await post.body.dump()
  t.equal(u.hits, 2)
})

t.test('upstream status codes and headers pass through', async (t) => {
  const u = await startUpstream('u', (_req, res) => {
    res.writeHead(418, { 'x-custom': 'yes', 'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain' })
    res.end('short and stout')
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const res = await gw.request('/p/teapot')
  t.equal(res.statusCode, 418)
  t.equal(res.headers['x-custom'], 'yes')
  t.same(res.headers['set-cookie'], ['a=1', 'b=2'])
  t.same(proxyStatus(res.headers['proxy-status']), [{ proxy: 'fastify-upstream', params: { 'received-status': 418 } }])
  t.equal(await res.body.text(), 'short and stout')
})

/** A raw HTTP/1.1 exchange, so hop-by-hop fields fetch/undici would refuse can be sent. */
async function rawGet (url: string, headers: Record<string, string>): Promise<{ status: number, headers: http.IncomingHttpHeaders, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = http.request(url, { headers, agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('hop-by-hop fields are removed in both directions; X-Forwarded-* and Via are set', async (t) => {
  const u = await startUpstream('u', (req, res) => {
    res.writeHead(200, {
      'content-type': 'application/json',
      connection: 'x-upstream-private',
      'x-upstream-private': 'secret',
      'keep-alive': 'timeout=5',
      'proxy-connection': 'keep-alive',
      via: '1.1 backend-sidecar'
    })
    res.end(JSON.stringify({ headers: req.headers }))
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const res = await rawGet(`${gw.url}/p/x`, {
    connection: 'keep-alive, x-client-private',
    'x-client-private': 'drop me',
    'keep-alive': 'timeout=5',
    'proxy-connection': 'keep-alive',
    te: 'trailers',
    'x-forwarded-for': '6.6.6.6',
    via: '1.0 corporate-proxy',
    'x-kept': 'yes'
  })
  const seen = (JSON.parse(res.body) as { headers: Record<string, string> }).headers
  for (const name of ['x-client-private', 'keep-alive', 'proxy-connection', 'te']) t.notOk(name in seen, `${name} did not reach the upstream`)
  t.equal(seen['x-kept'], 'yes')
  t.equal(seen['x-forwarded-for'], '127.0.0.1', 'an untrusted incoming X-Forwarded-For is replaced (trustProxy is off)')
  t.equal(seen['x-forwarded-proto'], 'http')
  t.equal(seen['x-forwarded-host'], gw.url.slice('http://'.length))
  t.match(seen.via, /^1\.0 corporate-proxy, 1\.1 fastify-upstream-[\w-]{12}$/, 'requests carry the instance\'s pseudonym (loop detection)')
  t.equal(seen.host, u.url.slice('http://'.length), 'the target gets its own Host; the original is in X-Forwarded-Host')
  t.notOk('x-upstream-private' in res.headers, 'a field the upstream named in Connection did not reach the client')
  t.notOk('proxy-connection' in res.headers)
  t.equal(res.headers.via, '1.1 backend-sidecar, 1.1 fastify-upstream', 'responses carry the public name only')
})

t.test('Expect: 100-continue is answered by the gateway; the body goes upstream without it', async (t) => {
  // curl sends this for bodies over 1 MB, .NET and Java clients often for any body.
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const body = 'x'.repeat(5000)
  let continued = false
  const answer = await new Promise<{ status: number, echo: Echo }>((resolve, reject) => {
    const request = http.request(`${gw.url}/p/upload`, { method: 'POST', headers: { expect: '100-continue', 'content-type': 'text/plain', 'content-length': body.length } }, (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => { resolve({ status: res.statusCode!, echo: JSON.parse(text) as Echo }) })
    })
    // The body is sent only once the gateway says 100 Continue.
    request.on('continue', () => { continued = true; request.end(body) })
    request.on('error', reject)
  })
  t.ok(continued, 'the client got 100 Continue')
  t.equal(answer.status, 200)
  t.equal(answer.echo.bytes, 5000, 'the whole body arrived upstream')
  t.equal(answer.echo.headers.expect, undefined, 'without the expectation, which this hop answered')
})

t.test('103 Early Hints go on to the client; the final answer is the response', async (t) => {
  const u = await startUpstream('hints', (_req, res) => {
    res.writeEarlyHints({ link: ['</style.css>; rel=preload; as=style', '</app.js>; rel=preload; as=script'] })
    setTimeout(() => res.end('final'), 20)
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const timers = (): number => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length
  const before = timers()
  const interim: Array<{ status: number, link: string | undefined }> = []
  const answer = await new Promise<{ status: number, body: string }>((resolve, reject) => {
    const request = http.get(`${gw.url}/p/x`, { agent: false }, (res) => {
      let body = ''
      res.on('data', (chunk: Buffer) => { body += chunk.toString() })
      res.on('end', () => { resolve({ status: res.statusCode!, body }) })
    })
    request.on('information', (info) => { interim.push({ status: info.statusCode, link: String(info.headers.link) }) })
    request.on('error', reject)
  })
  t.same(interim, [{ status: 103, link: '</style.css>; rel=preload; as=style, </app.js>; rel=preload; as=script' }], 'the hints arrived first')
  t.same(answer, { status: 200, body: 'final' })
  t.same(gw.failures(), [])
  // The interim answer once started a second body timer that outlived the exchange.
  t.ok(timers() <= before, `no timer left behind (${before} before, ${timers()} after)`)
})

t.test('with trustProxy, the trusted X-Forwarded-For chain is kept and extended', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] }, { trustProxy: true })
  const res = await rawGet(`${gw.url}/p/x`, { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example' })
  const seen = (JSON.parse(res.body) as Echo).headers
  t.equal(seen['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  t.equal(seen['x-forwarded-proto'], 'https')
  t.equal(seen['x-forwarded-host'], 'shop.example')
  t.equal(seen['x-real-ip'], '203.0.113.9', 'X-Real-IP is the client as the trusted chain names it')
})

t.test('Forwarded is treated like X-Forwarded-*: replaced unless trustProxy trusts the peer', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const spoof = { forwarded: 'for=203.0.113.7;proto=https', 'x-real-ip': '203.0.113.7', 'x-forwarded-for': '203.0.113.7' }
  const untrusting = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const seen = (JSON.parse((await rawGet(`${untrusting.url}/p/x`, spoof)).body) as Echo).headers
  const host = untrusting.url.slice('http://'.length)
  t.equal(seen.forwarded, `for=127.0.0.1;proto=http;host="${host}"`, 'a spoofed Forwarded is not trusted')
  t.equal(seen['x-real-ip'], '127.0.0.1', 'nor a spoofed X-Real-IP')

  const trusting = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] }, { trustProxy: '127.0.0.1' })
  const chained = (JSON.parse((await rawGet(`${trusting.url}/p/x`, spoof)).body) as Echo).headers
  t.equal(chained.forwarded, `for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host="${trusting.url.slice('http://'.length)}"`, 'a trusted proxy\'s Forwarded is extended')

  const elsewhere = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] }, { trustProxy: '10.0.0.1' })
  const untrusted = (JSON.parse((await rawGet(`${elsewhere.url}/p/x`, { forwarded: 'for=203.0.113.7' })).body) as Echo).headers
  t.match(untrusted.forwarded, /^for=127\.0\.0\.1;proto=http;host=/, 'trust for another address does not cover this peer')
})

t.test('an HTTP/1.0 request without Host sends no empty forwarding field', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const { port } = new URL(gw.url)
  const text = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /p/x HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n'))
    let data = ''
    socket.on('data', (chunk: Buffer) => { data += chunk.toString('latin1') })
    socket.on('end', () => resolve(data))
    socket.on('error', reject)
  })
  const seen = (JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Echo).headers
  t.notOk('x-forwarded-host' in seen, 'no X-Forwarded-Host, neither empty nor the client\'s')
  t.equal(seen.forwarded, 'for=127.0.0.1;proto=http', 'Forwarded without host=')
  t.equal(seen['x-forwarded-for'], '127.0.0.1')
})

t.test('the request id goes upstream and comes back, and a caller id is kept when Fastify accepts it', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] }, { requestIdHeader: 'x-request-id' })
  const res = await gw.request('/p/x', { headers: { 'x-request-id': 'abc-123' } })
  const echo = await res.body.json() as Echo
  t.equal(echo.headers['x-request-id'], 'abc-123')
  t.equal(res.headers['x-request-id'], 'abc-123')
  const fresh = await gw.request('/p/y')
  const id = fresh.headers['x-request-id']
  t.type(id, 'string')
  t.equal((await fresh.body.json() as Echo).headers['x-request-id'], id)
  const record = gw.logs.find((r) => r.msg === 'request completed' && r.reqId === id)
  t.ok(record, 'the id is the reqId of the log lines')
})

t.test('the request id comes back on the gateway\'s own errors and on non-proxied routes', async (t) => {
  const gw = await startGateway(t, { pools: { p: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/p', pool: 'p' }], requestIdHeader: 'x-trace-id' })
  const res = await gw.request('/p/x')
  t.equal(res.statusCode, 502)
  t.match(res.headers['x-trace-id'], /^req-/)
  await res.body.dump()
  const missing = await gw.request('/nowhere')
  t.match(missing.headers['x-trace-id'], /^req-/)
  await missing.body.dump()
})

t.test('routes are Fastify routes: they show in printRoutes and run hooks', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  t.match(gw.app.printRoutes(), /p \(DELETE, GET, HEAD, PATCH, POST, PUT, OPTIONS\)/)
  t.equal(gw.app.hasRoute({ url: '/p/*', method: 'GET' }), true)
  const guarded = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] }, {}, (app) => {
    app.addHook('onRequest', async (request, reply) => {
      if (request.headers.authorization !== 'Bearer ok') await reply.code(401).send({ error: 'unauthorized' })
    })
  })
  const denied = await guarded.request('/p/x')
  t.equal(denied.statusCode, 401, 'an app-level onRequest hook guards the proxied route')
  await denied.body.dump()
  const allowed = await guarded.request('/p/x', { headers: { authorization: 'Bearer ok' } })
  t.equal(allowed.statusCode, 200)
  await allowed.body.dump()
  t.equal(u.hits, 1, 'the denied request never reached the upstream')
})
