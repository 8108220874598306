// routes[].rewriteRequestHeaders and rewriteResponseHeaders: the app's code between the
// gateway's forwarding rules and Location rewriting; a rewriter that fails is the gateway's 500,
// never a crash, and never counted against a target.
import t from 'tap'
import http from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import type { RouteInput } from '../lib/index.js'

interface Echo { url: string, headers: Record<string, string> }

async function gatewayWith (t: Parameters<typeof startGateway>[0], target: string, route: Partial<RouteInput>, pool: Record<string, unknown> = {}): Promise<Awaited<ReturnType<typeof startGateway>>> {
  return await startGateway(t, { pools: { p: { targets: [target], ...pool } }, routes: [{ prefix: '/p', pool: 'p', ...route }], errors: { expose: 'full' } })
}

t.test('rewriteRequestHeaders sees the forwarding headers and changes what the upstream gets', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const seen: Array<Record<string, unknown>> = []
  const gw = await gatewayWith(t, u.url, {
    rewriteRequestHeaders: (request, headers) => {
      seen.push({ ...headers })
      const { cookie, ...rest } = headers
      return { ...rest, 'X-Tenant': String(request.headers['x-user'] ?? 'none'), 'x-count': 3 as unknown as string, connection: 'close', 'x-gone': undefined }
    }
  })
  const res = await gw.request('/p/a', { headers: { 'x-user': 'ada', cookie: 'secret=1' } })
  t.equal(res.statusCode, 200)
  const echo = await res.body.json() as Echo
  t.equal(echo.headers['x-tenant'], 'ada', 'a field added (in any case) reaches the upstream')
  t.equal(echo.headers['x-count'], '3', 'a number is sent as a string')
  t.equal(echo.headers.cookie, undefined, 'a field removed does not')
  t.not(echo.headers.connection, 'close', 'hop-by-hop fields from the rewriter are left out')
  t.match(echo.headers.host, /^127\.0\.0\.1:\d+$/, 'the target gets its own Host')
  t.equal(seen.length, 1)
  t.match(seen[0], { 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-request-id': /./ }, 'the rewriter runs after the forwarding rules')
  t.match(String(seen[0]!.via), /^1\.1 fastify-upstream-/)
})

t.test('a Host set by rewriteRequestHeaders goes to every try, retries included', async (t) => {
  const hosts: string[] = []
  const handler: http.RequestListener = (req, res) => {
    hosts.push(req.headers.host!)
    // The first try is cut before any answer: the request is retried on the other target.
    if (hosts.length === 1) req.socket.destroy()
    else res.end('ok')
  }
  const a = await startUpstream('a', handler)
  const b = await startUpstream('b', handler)
  t.teardown(a.close)
  t.teardown(b.close)
  let calls = 0
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url, b.url], retry: { retries: 1 } } },
    routes: [{ prefix: '/p', pool: 'p', rewriteRequestHeaders: (_request, headers) => { calls++; return { ...headers, host: 'api.internal' } } }]
  })
  const res = await gw.request('/p/x')
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), 'ok')
  t.same(hosts, ['api.internal', 'api.internal'])
  t.equal(calls, 1, 'the rewriter runs once per request, not per try')
})

t.test('rewriteResponseHeaders gets the status and runs before Location rewriting; framing stays the upstream\'s', async (t) => {
  const u = await startUpstream('u', (_req, res) => {
    res.writeHead(302, { location: '/elsewhere', 'x-internal': 'yes', 'content-type': 'text/plain', 'content-length': '5' })
    res.end('moved')
  })
  t.teardown(u.close)
  const calls: Array<{ status: number, url: string, via: unknown }> = []
  const gw = await gatewayWith(t, u.url, {
    rewritePrefix: '/v2',
    rewriteResponseHeaders: (headers, request, status) => {
      calls.push({ status, url: request.url, via: headers.via })
      const { 'x-internal': _dropped, ...rest } = headers
      // A Location at the target's own origin: the gateway's rewriting runs after, so it maps it.
      return { ...rest, location: `${u.url}/v2/next`, 'x-served-status': String(status), 'content-length': '999', 'transfer-encoding': 'gzip' }
    }
  })
  const res = await gw.request('/p/a')
  t.equal(res.statusCode, 302)
  t.equal(res.headers['x-internal'], undefined)
  t.equal(res.headers['x-served-status'], '302')
  t.equal(res.headers.location, `${gw.url}/p/next`, 'Location rewriting saw what the rewriter returned')
  t.equal(res.headers['content-length'], '5', 'the upstream\'s Content-Length stays')
  t.equal(res.headers['transfer-encoding'], undefined)
  t.equal(await res.body.text(), 'moved')
  t.same(calls, [{ status: 302, url: '/p/a', via: '1.1 fastify-upstream' }], 'after the gateway\'s rules: Via is there')
})

t.test('a rewriteRequestHeaders that throws, returns a promise or no object is a 500 proxy_internal_error; nothing goes upstream', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const rewriters: Array<[string, RouteInput['rewriteRequestHeaders'], RegExp]> = [
    ['throws', () => { throw new Error('tenant lookup broke') }, /rewriteRequestHeaders threw: tenant lookup broke/],
    ['promise', (async (_r: unknown, h: unknown) => h) as unknown as RouteInput['rewriteRequestHeaders'], /returned a promise/],
    ['nothing', (() => undefined) as unknown as RouteInput['rewriteRequestHeaders'], /returned undefined instead of a header object/],
    ['bad value', (_r, h) => ({ ...h, 'x-bad': { no: 1 } as unknown as string }), /header "x-bad" as object/]
  ]
  for (const [name, rewrite, why] of rewriters) {
    const gw = await gatewayWith(t, u.url, { rewriteRequestHeaders: rewrite })
    const res = await gw.request('/p/x', { headers: { accept: 'application/json' } })
    t.equal(res.statusCode, 500, name)
    const problem = await res.body.json() as Record<string, unknown>
    t.match(problem, { error: 'proxy_internal_error', blame: 'gateway', phase: 'route', cause: 'FST_UPSTREAM_REWRITE_FAILED', hint: why }, name)
    const failures = gw.failures()
    t.equal(failures.length, 1, `${name}: one log record`)
    t.match(failures[0], { level: 50, error: 'proxy_internal_error', cause: 'FST_UPSTREAM_REWRITE_FAILED', pool: 'p' })
    await gw.close()
  }
  t.equal(u.hits, 0)
})

t.test('a rewriteResponseHeaders that throws is a 500 before any byte; the target is not retried nor ejected', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await gatewayWith(t, u.url, {
    rewriteResponseHeaders: (headers, request) => {
      if (request.url.includes('boom')) throw new TypeError('no such header')
      return headers
    }
  }, { outlier: { consecutiveFailures: 2 } })
  for (let i = 0; i < 4; i++) {
    const res = await gw.request('/p/boom', { headers: { accept: 'application/json' } })
    t.equal(res.statusCode, 500)
    t.equal(res.headers['x-powered-by'], undefined)
    t.match(await res.body.json(), { error: 'proxy_internal_error', cause: 'FST_UPSTREAM_REWRITE_FAILED', hint: /rewriteResponseHeaders threw: no such header/ })
  }
  t.equal(u.hits, 4, 'each request tried once: never retried')
  const ok = await gw.request('/p/fine')
  t.equal(ok.statusCode, 200, 'the target is still in rotation')
  await ok.body.dump()
  t.equal(gw.app.upstream.pool('p').targets()[0]!.state, 'healthy')
  t.equal(gw.failures().length, 4)
})

t.test('a WebSocket handshake goes through rewriteRequestHeaders too', async (t) => {
  const server = http.createServer()
  const wss = new WebSocketServer({ server })
  const seen: http.IncomingHttpHeaders[] = []
  wss.on('connection', (socket, req) => {
    seen.push(req.headers)
    socket.on('message', (data) => socket.send(`echo: ${String(data)}`))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const client of wss.clients) client.terminate()
    wss.close()
    await new Promise((resolve) => server.close(resolve))
  })
  const gw = await gatewayWith(t, `http://127.0.0.1:${(server.address() as AddressInfo).port}`, {
    websocket: true,
    rewriteRequestHeaders: (request, headers) => ({ ...headers, 'x-tenant': String(request.headers['x-user']) })
  })
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/p/chat`, ['v1'], { headers: { 'x-user': 'grace' } })
  t.teardown(() => ws.terminate())
  await once(ws, 'open')
  ws.send('hi')
  const [message] = await once(ws, 'message') as [Buffer]
  t.equal(String(message), 'echo: hi')
  t.equal(seen[0]!['x-tenant'], 'grace')
  t.equal(seen[0]!['sec-websocket-protocol'], 'v1', 'the handshake\'s own fields still pass')
  ws.close()
})
