import t from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import type { FastifyServerOptions } from 'fastify'
import type { AddressInfo } from 'node:net'
import { startGateway, waitFor } from './helpers/gateway.js'
import { opensslMissing, selfSignedCert, startHttpsUpstream, startUpstream } from './helpers/servers.js'
import { h2Request, startH2Upstream, echoStream } from './helpers/h2.js'

interface Echo { method: string, path: string, headers: Record<string, string>, bytes: number }

t.test('an h2c pool: HTTP/1.1 clients reach an HTTP/2-only target, the hop speaking HTTP/2', async (t) => {
  const up = await startH2Upstream()
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url], protocol: 'h2c' } }, routes: [{ prefix: '/api', pool: 'rpc' }] })
  // node:http sends Connection as given (undici's client would refuse to name a field in it).
  const echo = await new Promise<Echo>((resolve, reject) => {
    http.get(`${gw.url}/api/items?x=1`, { headers: { connection: 'keep-alive, x-hop', 'x-hop': 'no', te: 'trailers', 'x-end': 'yes' }, agent: false }, (res) => {
      t.equal(res.statusCode, 200)
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() }).on('end', () => { resolve(JSON.parse(text) as Echo) })
    }).on('error', reject)
  })
  t.equal(echo.path, '/items?x=1')
  t.equal(echo.headers[':scheme'], 'http')
  t.equal(echo.headers['x-end'], 'yes')
  for (const name of ['connection', 'keep-alive', 'x-hop', 'te']) t.notOk(name in echo.headers, `${name} stays on the client's hop`)
  t.match(echo.headers.via, /^1\.1 fastify-upstream-/)
  t.equal(echo.headers['x-forwarded-proto'], 'http')

  const post = await gw.request('/api/upload', { method: 'POST', body: 'x'.repeat(100_000), headers: { 'content-type': 'text/plain' } })
  t.equal(post.statusCode, 200)
  t.equal((await post.body.json() as Echo).bytes, 100_000, 'a streamed body goes through whole')
})

t.test('an h2c pool multiplexes bodiless requests on one connection, connections.streams at a time', async (t) => {
  const held: Array<() => void> = []
  const up = await startH2Upstream((stream) => {
    held.push(() => {
      stream.respond({ ':status': 200 })
      stream.end('ok')
    })
  })
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url], protocol: 'h2c', connections: { streams: 4 } } }, routes: [{ prefix: '/', pool: 'rpc' }] })
  const answers = Array.from({ length: 6 }, async () => await gw.request('/slow'))
  await waitFor(() => held.length === 6, 5000, 'six requests at the target')
  t.equal(up.connections, 2, 'four streams on one connection, the other two on a second one')
  for (const release of held) release()
  for (const res of await Promise.all(answers)) {
    t.equal(res.statusCode, 200)
    t.equal(await res.body.text(), 'ok')
  }
})

t.test('a request with a streamed body does not wait behind a long answer on a shared HTTP/2 connection', async (t) => {
  let release: (() => void) | null = null
  const up = await startH2Upstream((stream, headers) => {
    if (headers[':path'] === '/events') {
      stream.respond({ ':status': 200, 'content-type': 'text/event-stream' })
      stream.write('data: 1\n\n')
      release = () => stream.end()
      return
    }
    echoStream(stream, headers)
  })
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url], protocol: 'h2c' } }, routes: [{ prefix: '/', pool: 'rpc' }] })
  const events = await gw.request('/events')
  t.equal(events.statusCode, 200)
  const post = await gw.request('/orders', { method: 'POST', body: 'order' })
  t.equal(post.statusCode, 200)
  t.equal((await post.body.json() as Echo).bytes, 5)
  release!()
  await events.body.text()
})

t.test('an h2 pool over TLS: ALPN h2 to a target that offers it; HTTP/2 clients of the gateway too', { skip: opensslMissing ?? false }, async (t) => {
  const cert = (await selfSignedCert())!
  const up = await startH2Upstream(echoStream, { tls: cert })
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url], protocol: 'h2', tls: { ca: cert.cert } } }, routes: [{ prefix: '/', pool: 'rpc' }] }, { http2: true } as FastifyServerOptions)
  const session = http2.connect(gw.url)
  t.teardown(() => session.close())
  // The first answer tells the gateway the target speaks HTTP/2 (ALPN); a burst then shares it.
  t.equal((await h2Request(session, { ':path': '/first' })).status, 200)
  const answers = await Promise.all(Array.from({ length: 5 }, async (_, i) => await h2Request(session, { ':path': `/h2/${i}`, 'x-n': String(i) })))
  answers.forEach((answer, i) => {
    t.equal(answer.status, 200)
    const echo = JSON.parse(answer.body) as Echo
    t.equal(echo.path, `/h2/${i}`)
    t.equal(echo.headers[':scheme'], 'https')
    t.match(echo.headers.via, /^2 fastify-upstream-/, 'Via says the gateway received HTTP/2')
    t.notOk(Object.keys(echo.headers).some((name) => name.startsWith(':') && ![':method', ':path', ':scheme', ':authority'].includes(name)))
  })
  t.equal(up.connections, 1, 'all share one HTTP/2 connection')
  const upload = await h2Request(session, { ':method': 'POST', ':path': '/up', 'content-type': 'text/plain' }, 'y'.repeat(70_000))
  t.equal(JSON.parse(upload.body).bytes, 70_000)
})

t.test('an h2 pool falls back to HTTP/1.1 where the target does not offer h2, one request per connection', { skip: opensslMissing ?? false }, async (t) => {
  const cert = (await selfSignedCert())!
  const held: Array<() => void> = []
  const up = await startHttpsUpstream(cert, (req, res) => {
    held.push(() => res.end(`http/${req.httpVersion}`))
  })
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { p: { targets: [up.url], protocol: 'h2', tls: { ca: cert.cert } } }, routes: [{ prefix: '/', pool: 'p' }] })
  const answers = Array.from({ length: 4 }, async () => await gw.request('/'))
  await waitFor(() => held.length === 4, 5000, 'four requests in flight at once')
  t.equal(up.connections, 4, 'never pipelined: each request has a connection of its own')
  for (const release of held) release()
  for (const res of await Promise.all(answers)) t.equal(await res.body.text(), 'http/1.1')
})

t.test('HTTP/2 clients (TLS and clear text) to an HTTP/1.1 pool: pseudo-headers stay on the client hop', { skip: opensslMissing ?? false }, async (t) => {
  const cert = (await selfSignedCert())!
  const u = await startUpstream('u')
  t.teardown(u.close)
  for (const secure of [false, true]) {
    const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/', pool: 'p' }] },
      (secure ? { http2: true, https: { ...cert, allowHTTP1: true } } : { http2: true }) as unknown as FastifyServerOptions)
    const url = `${secure ? 'https' : 'http'}://127.0.0.1:${(gw.app.server.address() as AddressInfo).port}`
    const session = http2.connect(url, secure ? { ca: cert.cert } : {})
    t.teardown(() => session.close())
    const answer = await h2Request(session, { ':method': 'POST', ':path': '/x', 'x-end': 'yes', te: 'trailers' }, 'body')
    t.equal(answer.status, 200)
    const echo = JSON.parse(answer.body) as { method: string, headers: Record<string, string>, bytes: number }
    t.equal(echo.method, 'POST')
    t.equal(echo.bytes, 4)
    t.equal(echo.headers['x-end'], 'yes')
    t.equal(echo.headers['x-forwarded-proto'], secure ? 'https' : 'http')
    t.notOk(Object.keys(echo.headers).some((name) => name.startsWith(':')), 'no pseudo-header reaches an HTTP/1.1 target')
  }
})

t.test('trailers travel from an HTTP/2 target to HTTP/2 and HTTP/1.1 (TE: trailers) clients', async (t) => {
  const up = await startH2Upstream((stream) => {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true })
    stream.once('wantTrailers', () => { stream.sendTrailers({ 'x-checksum': 'abc' }) })
    stream.end('body')
  })
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url], protocol: 'h2c' } }, routes: [{ prefix: '/', pool: 'rpc' }] }, { http2: true } as FastifyServerOptions)
  const session = http2.connect(gw.url)
  t.teardown(() => session.close())
  const answer = await h2Request(session, { ':path': '/t', te: 'trailers' })
  t.equal(answer.body, 'body')
  t.equal(answer.trailers['x-checksum'], 'abc')
})

t.test('REFUSED_STREAM from an HTTP/2 target is retried on another target, POST included', async (t) => {
  const refusing = await startH2Upstream((stream) => { stream.close(http2.constants.NGHTTP2_REFUSED_STREAM) })
  const good = await startH2Upstream()
  t.teardown(refusing.close)
  t.teardown(good.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [refusing.url, good.url], protocol: 'h2c', outlier: false } }, routes: [{ prefix: '/', pool: 'rpc' }] })
  for (let i = 0; i < 4; i++) {
    const res = await gw.request('/orders', { method: 'POST', body: 'order' })
    t.equal(res.statusCode, 200, 'the refused stream went to the other target')
    t.equal((await res.body.json() as Echo).bytes, 5)
  }
  t.ok(refusing.hits >= 1, 'the refusing target was tried')
  t.equal(good.hits, 4)
  const retried = gw.logs.filter((r) => Array.isArray(r.attempts) && (r.attempts as Array<{ cause: string }>).some((a) => a.cause === 'REFUSED_STREAM'))
  t.ok(retried.length >= 1, 'the retry names REFUSED_STREAM')
})

t.test('a target at maxConcurrentStreams: 1 serves a burst: what it refuses is tried again', async (t) => {
  const up = await startH2Upstream((stream, headers) => { setTimeout(() => { echoStream(stream, headers) }, 10) }, { settings: { maxConcurrentStreams: 1 } })
  const other = await startH2Upstream()
  t.teardown(up.close)
  t.teardown(other.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url, other.url], protocol: 'h2c', outlier: false, balancer: 'round-robin' } }, routes: [{ prefix: '/', pool: 'rpc' }] })
  const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => await gw.request(`/b/${i}`)))
  for (const res of answers) {
    t.equal(res.statusCode, 200)
    await res.body.dump()
  }
  t.equal(gw.failures().length, 0, 'no client saw a failure')
})

t.test('an h2c pool: health checks speak HTTP/2', async (t) => {
  const up = await startH2Upstream()
  t.teardown(up.close)
  const gw = await startGateway(t, {
    pools: { rpc: { targets: [up.url], protocol: 'h2c', health: { path: '/healthz', interval: 50, healthyAfter: 1 } } },
    routes: [{ prefix: '/', pool: 'rpc' }]
  })
  await waitFor(() => gw.app.upstream.pool('rpc').targets()[0]!.health === 'healthy', 5000, 'the health check over HTTP/2')
  t.ok(up.seen.some((h) => h[':path'] === '/healthz'), 'the check reached the target over HTTP/2')
})

t.test('a websocket route on an h2 pool: the handshake goes over HTTP/1.1 (ALPN), requests over HTTP/2', { skip: opensslMissing ?? false }, async (t) => {
  const { WebSocketServer, WebSocket } = await import('ws')
  const cert = (await selfSignedCert())!
  const wss = new WebSocketServer({ noServer: true })
  wss.on('connection', (ws) => { ws.on('message', (m: Buffer) => { ws.send(`echo:${m.toString()}`) }) })
  const up = await startH2Upstream(echoStream, {
    tls: cert,
    allowHTTP1: true,
    onServer: (server) => {
      server.on('upgrade', (req: http.IncomingMessage, socket: import('node:stream').Duplex, head: Buffer) => { wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)) })
    }
  })
  t.teardown(up.close)
  t.teardown(() => wss.close())
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url], protocol: 'h2', tls: { ca: cert.cert } } }, routes: [{ prefix: '/ws', pool: 'rpc', websocket: true }] })
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`)
  t.teardown(() => ws.terminate())
  const echoed = await new Promise<string>((resolve, reject) => {
    ws.once('open', () => ws.send('hi'))
    ws.once('message', (m: Buffer) => resolve(m.toString()))
    ws.once('error', reject)
  })
  t.equal(echoed, 'echo:hi')
  const res = await gw.request('/ws/plain')
  t.equal((await res.body.json() as Echo).headers[':scheme'], 'https', 'a plain request on the same route goes over HTTP/2')
})

t.test('on HTTP/2 pools the probe speaks HTTP/2 and requests carry the pool\'s credentials', { skip: opensslMissing ?? false }, async (t) => {
  const cert = (await selfSignedCert())!
  const clear = await startH2Upstream()
  const secure = await startH2Upstream(echoStream, { tls: cert })
  t.teardown(clear.close)
  t.teardown(secure.close)
  const gw = await startGateway(t, {
    pools: {
      rpc: { targets: [clear.url], protocol: 'h2c', auth: { headers: { authorization: 'Bearer s3cret' } } },
      web: { targets: [secure.url], protocol: 'h2', tls: { ca: cert.cert } }
    },
    routes: [{ prefix: '/rpc', pool: 'rpc' }, { prefix: '/web', pool: 'web' }]
  })
  const clearProbe = await gw.app.upstream.probe('rpc', clear.url)
  t.equal(clearProbe.ok, true)
  t.equal(clearProbe.status, 200)
  t.equal(clear.seen.at(-1)!.authorization, 'Bearer s3cret', 'the probe carries the credentials')
  const secureProbe = await gw.app.upstream.probe('web', secure.url)
  t.equal(secureProbe.ok, true)
  t.ok(secureProbe.ms.tls !== null, 'the TLS handshake is timed')
  const echo = await (await gw.request('/rpc/x')).body.json() as Echo
  t.equal(echo.headers.authorization, 'Bearer s3cret')
})
