// httpProxy: @fastify/http-proxy's options mapped to one pool and one route, refused with what
// to use instead, and the plugin registered several times in one app.
import t from 'tap'
import { once } from 'node:events'
import Fastify from 'fastify'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import upstream, { httpProxy, OptionsError, type HttpProxyOptions } from '../lib/index.js'
import { fromHttpProxy, REFUSED } from '../lib/options/http-proxy.js'
import { deadTarget, startUpstream } from './helpers/servers.js'
import { waitFor } from './helpers/gateway.js'

async function registrationError (options: unknown): Promise<Error> {
  const app = Fastify()
  try {
    await app.register(httpProxy, options as HttpProxyOptions)
    await app.ready()
  } catch (err) {
    return err as Error
  } finally {
    await app.close()
  }
  throw new Error('registered without an error')
}

t.test('every refused option fails at registration, naming it and what to use instead', async (t) => {
  for (const [path, instead] of Object.entries(REFUSED)) {
    const [key, sub] = path.split('.') as [string, string | undefined]
    const value = () => 'x'
    const options = { upstream: 'http://127.0.0.1:3000', ...(sub === undefined ? { [key]: value } : { [key]: { [sub]: value } }) }
    const err = await registrationError(options)
    t.ok(err instanceof OptionsError, `${path}: an OptionsError`)
    t.equal((err as OptionsError).path, path, `${path}: names the option`)
    t.equal(err.message, `${path}: not taken by httpProxy: ${instead} (docs/migrating.md)`, `${path}: says what to use instead`)
  }
})

t.test('options refused for some values only', async (t) => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ http2: true }, 'http2', /HTTP\/1\.1 to its targets/],
    [{ proxyPayloads: false }, 'proxyPayloads', /stream to the upstream as sent/],
    [{ globalAgent: true }, 'globalAgent', /own keep-alive pools/],
    [{ routes: ['/users'] }, 'routes', /longer prefix/],
    [{ prefix: '/rest-api/:id/endpoint' }, 'prefix', /prefix: "\/rest-api"/],
    [{ rewritePrefix: '/:id/endpoint' }, 'rewritePrefix', /not substituted/],
    [{ websocket: true, wsUpstream: 'ws://127.0.0.1:4000' }, 'wsUpstream', /register httpProxy a second time with upstream: "ws:\/\/127\.0\.0\.1:4000"/],
    [{ undici: { pipelining: 10 } }, 'undici.pipelining', /pipelining: 1/],
    [{ undici: { proxy: 'http://proxy:8080' } }, 'undici.proxy', /directly/],
    [{ undici: { request () {} } }, 'undici', /Dispatcher of your own/],
    [{ http: { agentOptions: { keepAlive: false } } }, 'http.agentOptions.keepAlive', /always kept alive/],
    [{ wsUpstream: 'ws://127.0.0.1:3000' }, 'wsUpstream', /only with websocket: true/],
    [{ preHandler: () => {}, beforeHandler: () => {} }, 'beforeHandler', /one of them/]
  ]
  for (const [given, path, message] of cases) {
    const err = await registrationError({ upstream: 'http://127.0.0.1:3000', ...given })
    t.equal((err as OptionsError).path, path, `${JSON.stringify(given)}: names ${path}`)
    t.match(err.message, message)
  }
  const noUpstream = await registrationError({ prefix: '/api' })
  t.equal(noUpstream.message, 'upstream: expected an http(s) URL, got undefined')
  const getUpstream = await registrationError({ upstream: '', replyOptions: { getUpstream: () => 'http://127.0.0.1:3000' } })
  t.equal((getUpstream as OptionsError).path, 'replyOptions.getUpstream')
  const typo = await registrationError({ upstream: 'http://127.0.0.1:3000', rewritePrefx: '/v1' })
  t.equal(typo.message, 'options.rewritePrefx: unknown option (did you mean "rewritePrefix"?)')
})

t.test('what the gateway itself refuses is named with http-proxy\'s option', async (t) => {
  const method = await registrationError({ upstream: 'http://127.0.0.1:3000', httpMethods: ['GET', 'FETCH'] })
  t.match(method.message, /^httpMethods\[1\]: expected one of "DELETE"/)
  const target = await registrationError({ upstream: 'ftp://127.0.0.1:3000' })
  t.match(target.message, /^upstream: expected an http\(s\) or ws\(s\) URL/)
  const config = await registrationError({ upstream: 'http://127.0.0.1:3000', config: { upstream: 1 } })
  t.match(config.message, /^config: /)
  const hook = await registrationError({ upstream: 'http://127.0.0.1:3000', preHandler: 'auth' })
  t.match(hook.message, /^preHandler: expected a hook function/)
})

t.test('options map to the pool and the route', async (t) => {
  const preHandler = (): void => {}
  t.same(fromHttpProxy({ upstream: 'http://127.0.0.1:3000' }), {
    pools: { '/': { targets: ['http://127.0.0.1:3000'] } },
    routes: [{ prefix: '/', pool: '/', rewritePrefix: '' }]
  }, 'no prefix: every path, to the upstream as sent')
  t.equal(fromHttpProxy({ upstream: 'http://127.0.0.1:3000/signon' }).routes[0]!.rewritePrefix, '/signon', 'the upstream\'s path is the default rewritePrefix, as in http-proxy')
  t.equal(fromHttpProxy({ upstream: 'http://127.0.0.1:3000/', prefix: '/api/', rewritePrefix: '/' }).routes[0]!.rewritePrefix, '', 'rewritePrefix "/" strips the prefix')
  t.equal(fromHttpProxy({ upstream: 'http://127.0.0.1:3000', prefix: '/api/' }).routes[0]!.prefix, '/api')
  const mapped = fromHttpProxy({
    upstream: 'https://api.internal:8443',
    prefix: '/api',
    rewritePrefix: '/v2',
    websocket: true,
    wsUpstream: 'wss://api.internal:8443',
    httpMethods: ['GET', 'POST'],
    beforeHandler: preHandler,
    constraints: { version: '1.0.0' },
    internalRewriteLocationHeader: false,
    retryMethods: ['GET'],
    replyOptions: { timeout: 5000, retriesCount: 3 },
    undici: { connections: 16, keepAliveTimeout: 10000, connectTimeout: 500, headersTimeout: 0, connect: { rejectUnauthorized: false, servername: 'api' } },
    cacheURLs: 0,
    disableRequestLogging: true
  })
  t.same(mapped.pools['/api'], {
    targets: ['https://api.internal:8443'],
    connections: { perTarget: 16, keepAlive: 10000 },
    tls: { rejectUnauthorized: false, servername: 'api' }
  })
  t.same(mapped.routes[0], {
    prefix: '/api',
    pool: '/api',
    rewritePrefix: '/v2',
    methods: ['GET', 'POST'],
    websocket: true,
    rewriteLocation: false,
    preHandler,
    constraints: { version: '1.0.0' },
    timeouts: { connect: 500, headers: 5000, body: 5000 },
    retry: { retries: 3, methods: ['GET'] }
  }, 'undici\'s 0 turns a timeout off, and replyOptions.timeout (per request in reply-from) wins')
  t.same(fromHttpProxy({ upstream: 'http://127.0.0.1:3000', http: { agentOptions: { maxSockets: 4, ca: 'PEM' }, requestOptions: { timeout: 2500 } } }), {
    pools: { '/': { targets: ['http://127.0.0.1:3000'], connections: { perTarget: 4 }, tls: { ca: 'PEM' } } },
    routes: [{ prefix: '/', pool: '/', rewritePrefix: '', timeouts: { headers: 2500, body: 2500 } }]
  })
})

t.test('the main plugin given http-proxy\'s options points to httpProxy', async (t) => {
  const app = Fastify()
  t.teardown(async () => await app.close())
  await t.rejects(async () => { await app.register(upstream, { upstream: 'http://127.0.0.1:3000', prefix: '/api' } as never) }, {
    path: 'options.upstream',
    message: /this is an option of @fastify\/http-proxy\. Register the httpProxy export/
  })
})

t.test('registered once per prefix, the registrations share app.upstream, the status page and metrics', async (t) => {
  const users = await startUpstream('users')
  const auth = await startUpstream('auth')
  t.teardown(users.close)
  t.teardown(auth.close)
  const app = Fastify()
  t.teardown(async () => await app.close())
  // The main plugin first (it decides the status page and metrics), then httpProxy twice.
  await app.register(upstream, { pools: { more: { targets: [users.url] } }, routes: [{ prefix: '/more', pool: 'more', rewritePrefix: '/more' }] })
  await app.register(httpProxy, { upstream: users.url, prefix: '/users' })
  await app.register(httpProxy, { upstream: `${auth.url}/signon`, prefix: '/auth' })
  await app.register(httpProxy, { upstream: await deadTarget(t), prefix: '/down' })

  for (const [path, name, url] of [['/users/7', 'users', '/7'], ['/auth/user?x=1', 'auth', '/signon/user?x=1'], ['/more/x', 'users', '/more/x']]) {
    const res = await app.inject(path!)
    t.equal(res.statusCode, 200, path)
    t.match(res.json(), { name, url }, `${path!} reaches ${url!}`)
  }
  t.same(app.upstream.pools().map((p) => p.name), ['more', '/users', '/auth', '/down'], 'app.upstream knows every registration\'s pools')
  const status = await app.inject({ url: '/_upstream', headers: { accept: 'application/json' } })
  t.same(status.json().pools.map((p: { name: string }) => p.name), ['more', '/users', '/auth', '/down'], 'one status page lists them all')
  const metrics = await app.inject('/metrics')
  for (const pool of ['more', '/users', '/auth']) t.match(metrics.body, `fastify_upstream_requests_total{pool="${pool}"`, `metrics count ${pool}`)

  // A later registration's failure is told on the first one's status page.
  const failed = await app.inject({ url: '/down/x', headers: { accept: 'application/json' } })
  t.equal(failed.statusCode, 502)
  const story = await app.inject({ url: `/_upstream/requests/${failed.json().requestId as string}`, headers: { accept: 'application/json' } })
  t.equal(story.statusCode, 200, 'its story is found by its request id')
  t.match(story.json(), { pool: '/down', route: '/down', answer: { status: 502, error: 'connection_refused' } })
})

t.test('a later registration may not reuse a pool name', async (t) => {
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(httpProxy, { upstream: 'http://127.0.0.1:3000', prefix: '/users' })
  await t.rejects(async () => { await app.register(upstream, { pools: { '/users': { targets: ['http://127.0.0.1:3000'] } }, routes: [{ prefix: '/u2', pool: '/users' }] }) }, {
    path: 'pools./users',
    message: /already defined by an earlier registration/
  })
})

t.test('a later registration may not set the status page or metrics, nor reuse a prefix', async (t) => {
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(httpProxy, { upstream: 'http://127.0.0.1:3000', prefix: '/a' })
  await t.rejects(async () => { await app.register(upstream, { pools: { b: { targets: ['http://127.0.0.1:3000'] } }, routes: [{ prefix: '/b', pool: 'b' }], metrics: false }) }, {
    path: 'metrics',
    message: /set it on the first registration/
  })
  const again = Fastify()
  t.teardown(async () => await again.close())
  await again.register(httpProxy, { upstream: 'http://127.0.0.1:3000', prefix: '/a' })
  await t.rejects(async () => { await again.register(httpProxy, { upstream: 'http://127.0.0.1:3001', prefix: '/a/' }) }, {
    path: 'prefix',
    message: /"\/a" is already used by an earlier registration/
  })
})

t.test('httpProxy adds no metrics route, and leaves an app\'s own status path alone', async (t) => {
  const app = Fastify()
  t.teardown(async () => await app.close())
  app.get('/metrics', async () => 'the app\'s metrics')
  await app.register(httpProxy, { upstream: 'http://127.0.0.1:3000', prefix: '/api' })
  await app.register(httpProxy, { upstream: 'http://127.0.0.1:3000', prefix: '/b' })
  t.equal((await app.inject('/metrics')).body, 'the app\'s metrics', 'an app\'s /metrics stays its own')
  t.equal((await app.inject({ url: '/_upstream', headers: { accept: 'application/json' } })).statusCode, 200, 'the status page is served')

  const own = Fastify()
  t.teardown(async () => await own.close())
  own.get('/_upstream', async () => 'the app\'s page')
  await own.register(httpProxy, { upstream: 'http://127.0.0.1:3000', prefix: '/api' })
  t.equal((await own.inject('/_upstream')).body, 'the app\'s page')
  t.equal((await own.inject('/metrics')).statusCode, 404, 'no metrics route')
})

t.test('registered in a prefixed context, the routes are under its prefix', async (t) => {
  const service = await startUpstream('svc')
  t.teardown(service.close)
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(async (v1) => { await v1.register(httpProxy, { upstream: service.url, prefix: '/users', rewritePrefix: '/u' }) }, { prefix: '/v1' })
  const res = await app.inject('/v1/users/7?x=1')
  t.equal(res.statusCode, 200)
  t.match(res.json(), { url: '/u/7?x=1' })
  t.equal((await app.inject('/users/7')).statusCode, 404, 'nothing outside it')
})

t.test('WebSocket routes of several registrations share one upgrade listener', async (t) => {
  const server = http.createServer((_req, res) => res.end('plain'))
  const wss = new WebSocketServer({ server })
  wss.on('connection', (socket, req) => socket.on('message', (data) => socket.send(`${req.url!}: ${String(data)}`)))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const client of wss.clients) client.terminate()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  const service = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(httpProxy, { upstream: service.url, prefix: '/plain' })
  await app.register(httpProxy, { upstream: service.url, prefix: '/chat', websocket: true })
  await app.register(httpProxy, { upstream: service.url, prefix: '/feed', websocket: true })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `ws://127.0.0.1:${(app.server.address() as { port: number }).port}`
  for (const prefix of ['/chat', '/feed']) {
    const ws = new WebSocket(`${base}${prefix}/room`)
    t.teardown(() => ws.terminate())
    await once(ws, 'open')
    ws.send('hi')
    const [data] = await once(ws, 'message') as [Buffer]
    t.equal(String(data), '/room: hi', `${prefix}: tunnelled`)
    ws.close()
  }
  // An upgrade on a route without websocket is answered as plain HTTP, not left hanging.
  const plain = new WebSocket(`${base}/plain/room`)
  // Ending a handshake that got no 101 is, to ws, an error.
  plain.on('error', () => {})
  const [, response] = await once(plain, 'unexpected-response') as [unknown, { statusCode: number }]
  t.equal(response.statusCode, 200, 'the plain route answers the request as HTTP')
  plain.terminate()
})

t.test('two registrations with body limits: Expect: 100-continue is decided once, by the route\'s limit', async (t) => {
  const service = await startUpstream('svc')
  t.teardown(service.close)
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(upstream, { pools: { a: { targets: [service.url] } }, routes: [{ prefix: '/a', pool: 'a', bodyLimit: 10 }] })
  await app.register(upstream, { pools: { b: { targets: [service.url] } }, routes: [{ prefix: '/b', pool: 'b', bodyLimit: 100 }] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port

  /** A POST that waits for 100 Continue before its body: the status, and whether 100 came. */
  const post = async (path: string, length: number): Promise<{ status: number, continued: boolean }> => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers: { expect: '100-continue', 'content-length': length, connection: 'close' } })
    let continued = false
    req.on('continue', () => { continued = true; req.end('x'.repeat(length)) })
    req.flushHeaders()
    const [res] = await once(req, 'response') as [http.IncomingMessage]
    res.resume()
    await once(res, 'end')
    if (!continued) req.destroy()
    return { status: res.statusCode!, continued }
  }
  t.same(await post('/b/x', 50), { status: 200, continued: true }, 'under the second registration\'s limit: one 100 Continue, one answer')
  t.same(await post('/b/x', 500), { status: 413, continued: false }, 'over it: 413, no 100 Continue')
  t.same(await post('/a/x', 50), { status: 413, continued: false }, 'the first registration\'s limit holds for its route')
  t.equal(service.hits, 1, 'the upstream got the one request under its limit, once')
})

t.test('a later registration\'s mirror is counted on the first one\'s status page', async (t) => {
  const main = await startUpstream('main')
  const shadow = await startUpstream('shadow')
  t.teardown(main.close)
  t.teardown(shadow.close)
  const app = Fastify()
  t.teardown(async () => await app.close())
  await app.register(httpProxy, { upstream: main.url, prefix: '/plain' })
  await app.register(upstream, {
    pools: { main: { targets: [main.url] }, shadow: { targets: [shadow.url] } },
    routes: [{ prefix: '/copied', pool: 'main', mirror: { pool: 'shadow' } }]
  })
  t.equal((await app.inject('/copied/x')).statusCode, 200)
  await waitFor(() => shadow.hits === 1, 5000, 'the copy')
  type Report = { routes: Array<{ prefix: string, mirror?: { answered: number } }> }
  const copied = async (): Promise<Report['routes'][number] | undefined> =>
    ((await app.inject({ url: '/_upstream', headers: { accept: 'application/json' } })).json() as Report).routes.find((r) => r.prefix === '/copied')
  // The copy's answer is counted when it ends, a moment after the mirror service saw it.
  for (let i = 0; i < 250 && (await copied())?.mirror?.answered !== 1; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.match(await copied(), { mirror: { answered: 1 } }, 'the copy is counted where the first registration shows routes')
})
