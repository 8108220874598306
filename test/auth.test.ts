// Upstream credentials (pools.<name>.auth): static headers and a bearer token from an async
// function, on every request, health check, probe and websocket handshake; refreshed before
// expiry and after a 401, one call at a time; a failing function is a bounded 502; and no
// credential value ever shows in a log line, an error page or the status report.
import t from 'tap'
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { once } from 'node:events'
import { Readable } from 'node:stream'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, waitFor } from './helpers/gateway.js'
import { startUpstream, echo } from './helpers/servers.js'
import type { AuthToken, UpstreamOptions } from '../lib/index.js'
import { TOKEN_TIMEOUT_MS } from '../lib/pool/credentials.js'
import { ourProxyStatus } from './helpers/proxy-status.js'

const STATIC_SECRET = 'static-SECRET-6b1f'

/** An upstream that echoes the request, and refuses any bearer token but `good` with 401. */
async function guarded (good: (token: string | undefined) => boolean): Promise<Awaited<ReturnType<typeof startUpstream>> & { seen: Array<string | undefined> }> {
  const seen: Array<string | undefined> = []
  const up = await startUpstream('up', (req, res) => {
    const token = req.headers.authorization
    seen.push(token)
    if (!good(token)) {
      req.resume()
      res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' })
      res.end('who are you?')
      return
    }
    echo('up')(req, res)
  })
  t.teardown(up.close)
  return Object.assign(up, { seen })
}

/** A token function that hands out `values` in turn (the last one again), counting its calls. */
function tokens (values: string[], expiresIn?: number): { fn: () => Promise<AuthToken>, calls: () => number } {
  let calls = 0
  return {
    fn: async () => {
      const value = values[Math.min(calls, values.length - 1)]!
      calls++
      return expiresIn === undefined ? { value } : { value, expiresAt: Date.now() + expiresIn }
    },
    calls: () => calls
  }
}

const options = (target: string, auth: UpstreamOptions['pools'][string]['auth'], extra: Partial<UpstreamOptions['pools'][string]> = {}): UpstreamOptions => ({
  pools: { api: { targets: [target], auth, ...extra } },
  routes: [{ prefix: '/api', pool: 'api' }],
  errors: { expose: 'full' }
})

t.test('static headers reach the upstream on every request, over the client\'s own', async (t) => {
  const up = await startUpstream('up')
  t.teardown(up.close)
  const gw = await startGateway(t, options(up.url, { headers: { 'X-Api-Key': STATIC_SECRET, 'x-tenant': 'acme' } }))
  for (let i = 0; i < 3; i++) {
    const res = await gw.request('/api/x', { headers: { 'x-api-key': 'client-guess', authorization: 'Basic Y2xpZW50' } })
    t.equal(res.statusCode, 200)
    const seen = (await res.body.json() as { headers: Record<string, string> }).headers
    t.equal(seen['x-api-key'], STATIC_SECRET, 'the gateway\'s value, not the client\'s')
    t.equal(seen['x-tenant'], 'acme')
    t.equal(seen.authorization, 'Basic Y2xpZW50', 'without auth.token, the client\'s Authorization passes')
  }
})

t.test('a token is fetched once, sent as Bearer over the client\'s Authorization, and reused', async (t) => {
  const up = await guarded(() => true)
  const token = tokens(['tok-1'])
  const gw = await startGateway(t, options(up.url, { token: token.fn }))
  for (let i = 0; i < 5; i++) {
    const res = await gw.request('/api/x', { headers: { authorization: 'Bearer client-forged' } })
    t.equal(res.statusCode, 200)
    await res.body.dump()
  }
  t.same(up.seen, Array(5).fill('Bearer tok-1'))
  t.equal(token.calls(), 1, 'a token without expiresAt is kept until a 401')
})

t.test('a token is refreshed shortly before it expires, and an expired one is never sent', async (t) => {
  const up = await guarded(() => true)
  const issued: Array<{ value: string, at: number, expiresAt: number }> = []
  // 10% of it, 150 ms before the end, a request starts the refresh in the background.
  const lifetime = 1500
  const gw = await startGateway(t, options(up.url, {
    token: async () => {
      const at = Date.now()
      const value = `tok-${issued.length + 1}`
      issued.push({ value, at, expiresAt: at + lifetime })
      return { value, expiresAt: new Date(at + lifetime) }
    }
  }))
  const sent: Array<{ value: string, at: number }> = []
  const deadline = Date.now() + 6000
  while (Date.now() < deadline && issued.length < 3) {
    const at = Date.now()
    const res = await gw.request('/api/x')
    t.equal(res.statusCode, 200)
    const seen = (await res.body.json() as { headers: Record<string, string> }).headers
    sent.push({ value: seen.authorization!.replace('Bearer ', ''), at })
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.ok(issued.length >= 2, `the token was refreshed (${issued.length} calls)`)
  t.ok(issued[1]!.at < issued[0]!.expiresAt, 'the second token was asked for before the first expired')
  for (const { value, at } of sent) {
    const token = issued.find((i) => i.value === value)!
    t.ok(at < token.expiresAt, `${value} was sent before it expired`)
  }
})

t.test('50 concurrent requests wait for one token call', async (t) => {
  const up = await guarded(() => true)
  let calls = 0
  const gw = await startGateway(t, options(up.url, {
    token: async () => {
      calls++
      await new Promise((resolve) => setTimeout(resolve, 200))
      return { value: 'tok-slow' }
    }
  }))
  const statuses = await Promise.all(Array.from({ length: 50 }, async () => {
    const res = await gw.request('/api/x')
    await res.body.dump()
    return res.statusCode
  }))
  t.same(statuses, Array(50).fill(200))
  t.equal(calls, 1)
  t.same(new Set(up.seen), new Set(['Bearer tok-slow']))
})

t.test('an upstream 401 refreshes the token once and a GET is sent again with the new one', async (t) => {
  const up = await guarded((token) => token === 'Bearer good')
  const token = tokens(['stale', 'good'])
  const gw = await startGateway(t, options(up.url, { token: token.fn }))
  const res = await gw.request('/api/x')
  t.equal(res.statusCode, 200, 'the client never sees the 401')
  await res.body.dump()
  t.same(up.seen, ['Bearer stale', 'Bearer good'])
  t.equal(token.calls(), 2)
  const recovered = gw.logs.find((r) => r.retried === true)
  t.ok(recovered, 'the replay is logged as a request that succeeded after a failed try')
  t.match(recovered?.msg, /answered 401/)
})

t.test('a storm of 401s to the old token makes one refresh, and every GET is replayed', async (t) => {
  const up = await guarded((token) => token === 'Bearer good')
  const token = tokens(['stale', 'good'])
  const gw = await startGateway(t, options(up.url, { token: token.fn }))
  const statuses = await Promise.all(Array.from({ length: 50 }, async () => {
    const res = await gw.request('/api/x')
    await res.body.dump()
    return res.statusCode
  }))
  t.same(statuses, Array(50).fill(200))
  t.equal(token.calls(), 2, 'one call for the first token, one after the 401s')
})

t.test('a second 401 goes to the client as sent, and 401s do not call the function on every request', async (t) => {
  const up = await guarded(() => false)
  const token = tokens(['a', 'b', 'c', 'd'])
  const gw = await startGateway(t, options(up.url, { token: token.fn }))
  for (let i = 0; i < 20; i++) {
    const res = await gw.request('/api/x')
    t.equal(res.statusCode, 401)
    t.equal(await res.body.text(), 'who are you?', 'the upstream\'s own answer')
  }
  t.equal(token.calls(), 2, 'the first token and one refresh: a 401 refreshes at most once in 5 s')
  t.same(up.seen.slice(0, 3), ['Bearer a', 'Bearer b', 'Bearer b'])
})

t.test('a request that cannot be replayed gets the 401, and the next one carries the new token', async (t) => {
  const up = await guarded((token) => token === 'Bearer good')
  const token = tokens(['stale', 'good'])
  const gw = await startGateway(t, options(up.url, { token: token.fn }, { retry: { methods: ['GET', 'POST'] } }))
  // Over the 64 KiB replay limit, streamed: the gateway keeps none of it to send again.
  const big = Buffer.alloc(200 * 1024, 'x')
  const post = await gw.request('/api/upload', { method: 'POST', body: Readable.from([big.subarray(0, 100 * 1024), big.subarray(100 * 1024)]), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(post.statusCode, 401, 'the POST is not sent twice')
  await post.body.dump()
  t.same(up.seen, ['Bearer stale'])
  const next = await gw.request('/api/x', { method: 'POST', body: 'small' })
  t.equal(next.statusCode, 200)
  await next.body.dump()
  t.same(up.seen, ['Bearer stale', 'Bearer good'], 'the 401 had the token refreshed for the next request')
  t.equal(token.calls(), 2)
})

t.test('a POST is not replayed after a 401 unless retry.methods lists it', async (t) => {
  const up = await guarded((token) => token === 'Bearer good')
  const token = tokens(['stale', 'good'])
  const gw = await startGateway(t, options(up.url, { token: token.fn }))
  const post = await gw.request('/api/x', { method: 'POST', body: 'order=1' })
  t.equal(post.statusCode, 401)
  await post.body.dump()
  t.equal(up.hits, 1)
})

t.test('a failing token function gives 502, blame gateway, phase send, with a hint; the next request tries again', async (t) => {
  const up = await guarded(() => true)
  let broken = true
  let calls = 0
  const gw = await startGateway(t, options(up.url, {
    token: async () => {
      calls++
      if (broken) throw new Error('token service said 503')
      return { value: 'tok-ok' }
    }
  }))
  const res = await gw.request('/api/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 502)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'proxy_internal_error' } })
  const problem = await res.body.json() as Record<string, unknown>
  t.match(problem, { error: 'proxy_internal_error', blame: 'gateway', phase: 'send', temporary: true, cause: 'FST_UPSTREAM_CREDENTIALS' })
  t.match(problem.hint, /auth\.token/)
  t.match(problem.hint, /token service said 503/, 'the hint says what the function did')
  t.equal(up.hits, 0, 'nothing was sent to the upstream')
  const record = gw.failures().find((r) => r.error === 'proxy_internal_error')
  t.match(record, { status: 502, blame: 'gateway', phase: 'send', pool: 'api', cause: 'FST_UPSTREAM_CREDENTIALS' })
  t.ok(gw.logs.some((r) => r.auth === 'token' && /token service said 503/.test(String(r.reason))), 'the function\'s failure is logged once, with its words')

  // Within the backoff, requests get the same answer without another call.
  const again = await gw.request('/api/x')
  t.equal(again.statusCode, 502)
  await again.body.dump()
  t.equal(calls, 1, 'no second call within a second of the failure')

  broken = false
  // Bounded polling: the backoff after a failure is a second.
  let status = 0
  for (const deadline = Date.now() + 5000; status !== 200 && Date.now() < deadline;) {
    const next = await gw.request('/api/x')
    status = next.statusCode
    await next.body.dump()
    if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.equal(status, 200, 'the failure did not stick')
  t.same(up.seen, ['Bearer tok-ok'])
})

t.test('a token function that resolves with something unusable is a failure too', async (t) => {
  const up = await guarded(() => true)
  const results: unknown[] = [{ token: 'x' }, { value: 'has space' }, { value: 'ok', expiresAt: Math.floor(Date.now() / 1000) + 3600 }, 'just-a-string']
  for (const result of results) {
    const gw = await startGateway(t, options(up.url, { token: async () => result as AuthToken }))
    const res = await gw.request('/api/x', { headers: { accept: 'application/json' } })
    t.equal(res.statusCode, 502)
    const problem = await res.body.json() as { hint: string, phase: string }
    t.equal(problem.phase, 'send')
    t.match(problem.hint, /auth\.token of pool "api" resolved with/)
    await gw.close()
  }
  const gw = await startGateway(t, options(up.url, { token: async () => ({ value: 'ok', expiresAt: Math.floor(Date.now() / 1000) + 3600 }) }))
  const problem = await (await gw.request('/api/x', { headers: { accept: 'application/json' } })).body.json() as { hint: string }
  t.match(problem.hint, /epoch milliseconds/, 'an expiresAt in seconds is called out')
  t.equal(up.hits, 0)
})

t.test('a token function that never settles is cut off: the request gets its 502, it does not hang', async (t) => {
  const up = await guarded(() => true)
  const gw = await startGateway(t, options(up.url, { token: async () => await new Promise<AuthToken>(() => {}) }))
  const started = Date.now()
  const res = await gw.request('/api/x', { headers: { accept: 'application/json' } })
  const took = Date.now() - started
  t.equal(res.statusCode, 502)
  const problem = await res.body.json() as { hint: string }
  t.match(problem.hint, new RegExp(`did not settle within ${TOKEN_TIMEOUT_MS} ms`))
  t.ok(took >= TOKEN_TIMEOUT_MS - 100 && took < TOKEN_TIMEOUT_MS + 3000, `answered after the bound (${took} ms)`)
})

t.test('no credential value shows in a log line, an error page or the status report', async (t) => {
  const TOKEN = 'tok-SECRET-93ad'
  let calls = 0
  // The upstream fails in ways that produce failure records, and refuses the token once.
  const up = await startUpstream('up', (req, res) => {
    if (req.url === '/401') res.writeHead(401).end()
    else if (req.url === '/reset') res.socket?.destroy()
    else res.end('ok')
  })
  t.teardown(up.close)
  const gw = await startGateway(t, {
    pools: {
      api: {
        targets: [up.url],
        auth: {
          headers: { 'x-api-key': STATIC_SECRET },
          token: async () => {
            calls++
            // A function whose error repeats the token it holds (it happens).
            if (calls > 1) throw new Error(`refresh of ${TOKEN} failed; key ${STATIC_SECRET}`)
            return { value: TOKEN }
          }
        },
        // The resets must not take the only target out: the last requests need it.
        outlier: false
      }
    },
    routes: [{ prefix: '/api', pool: 'api' }],
    errors: { expose: 'full' }
  })
  const pages: string[] = []
  // The client's own credentials are not echoed either.
  const client = { authorization: 'Bearer CLIENT-SECRET-1', 'proxy-authorization': 'Basic PROXY-SECRET-2', 'x-api-key': 'CLIENT-SECRET-3' }
  for (const accept of ['application/json', 'text/html', 'text/plain']) {
    const res = await gw.request('/api/reset', { headers: { accept, ...client } })
    t.equal(res.statusCode, 502)
    pages.push(await res.body.text())
  }
  // 401 → refresh → the function fails with the secrets in its message → 502 with a hint,
  // for that request and the next.
  for (const path of ['/api/401', '/api/x']) {
    const failed = await gw.request(path, { headers: { accept: 'application/json' } })
    t.equal(failed.statusCode, 502)
    pages.push(await failed.body.text())
  }
  const page = pages.at(-1)!
  t.match(page, /\[redacted\]/, 'the function\'s message is shown, its secrets redacted')
  for (const accept of ['application/json', 'text/html']) {
    pages.push(await (await gw.request('/_upstream', { headers: { accept } })).body.text())
  }
  for (const record of gw.failures()) {
    pages.push(await (await gw.request(`/_upstream/requests/${String(record.reqId)}`, { headers: { accept: 'application/json' } })).body.text())
  }
  const logText = JSON.stringify(gw.logs)
  t.ok(gw.logs.length > 5, 'there were log lines to search')
  for (const secret of [TOKEN, STATIC_SECRET, 'CLIENT-SECRET', 'PROXY-SECRET']) {
    t.notOk(logText.includes(secret), `${secret} is in no log line`)
    t.notOk(pages.some((p) => p.includes(secret)), `${secret} is on no page`)
  }
})

t.test('health checks and the probe carry the credentials', async (t) => {
  const seen: http.IncomingHttpHeaders[] = []
  const up = await startUpstream('up', (req, res) => {
    if (req.url === '/health') seen.push(req.headers)
    res.end('ok')
  })
  t.teardown(up.close)
  const gw = await startGateway(t, options(up.url, { headers: { 'x-api-key': STATIC_SECRET }, token: async () => ({ value: 'tok-health' }) }, {
    health: { path: '/health', interval: 100 }
  }))
  await waitFor(() => seen.length > 0, 5000, 'a health check')
  t.equal(seen[0]!['x-api-key'], STATIC_SECRET)
  t.equal(seen[0]!.authorization, 'Bearer tok-health')
  const result = await gw.app.upstream.probe('api', up.url)
  t.equal(result.status, 200)
  const probed = seen.at(-1)!
  t.equal(probed['user-agent'], 'fastify-upstream-probe')
  t.equal(probed.authorization, 'Bearer tok-health')
  t.equal(probed['x-api-key'], STATIC_SECRET)
})

t.test('a health check answered 401 has the token refreshed, and the target comes back', async (t) => {
  const up = await guarded((token) => token === 'Bearer new')
  const token = tokens(['old', 'new'])
  const gw = await startGateway(t, options(up.url, { token: token.fn }, { health: { path: '/health', interval: 50, healthyAfter: 1 } }))
  await waitFor(() => up.seen.includes('Bearer new') && gw.app.upstream.pool('api').targets()[0]!.health === 'healthy', 5000, 'a check with the new token')
  t.equal(token.calls(), 2)
  t.equal(up.seen[0], 'Bearer old')
})

t.test('health checks wait out a failing token function instead of blaming the target', async (t) => {
  let checks = 0
  const up = await startUpstream('up', (_req, res) => {
    checks++
    res.end('ok')
  })
  t.teardown(up.close)
  let calls = 0
  const gw = await startGateway(t, options(up.url, { token: async () => { calls++; throw new Error('down') } }, { health: { path: '/health', interval: 50 } }))
  await waitFor(() => calls >= 2, 5000, 'two token calls')
  t.equal(checks, 0, 'no check was sent without its credentials')
  t.equal(gw.app.upstream.pool('api').targets()[0]!.health, 'unknown', 'the target is not judged')
})

/**
 * A WebSocket upstream that echoes messages and keeps each handshake's headers; `accepts`
 * decides which handshakes it takes (the others get 401).
 */
async function wsEcho (t: { teardown: (fn: () => unknown) => void }, accepts: (headers: http.IncomingHttpHeaders) => boolean = () => true): Promise<{ url: string, handshakes: http.IncomingHttpHeaders[] }> {
  const server = http.createServer((_req, res) => res.end())
  const sockets = new Set<Socket>()
  server.on('connection', (socket) => { sockets.add(socket); socket.once('close', () => sockets.delete(socket)) })
  const handshakes: http.IncomingHttpHeaders[] = []
  const wss = new WebSocketServer({
    server,
    verifyClient: (info, done) => {
      handshakes.push(info.req.headers)
      if (accepts(info.req.headers)) done(true)
      else done(false, 401)
    }
  })
  wss.on('connection', (socket) => { socket.on('message', (data) => socket.send(`echo: ${String(data)}`)) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const client of wss.clients) client.terminate()
    wss.close()
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, handshakes }
}

t.test('a websocket handshake carries the credentials', async (t) => {
  const { url, handshakes } = await wsEcho(t)
  const gw = await startGateway(t, {
    pools: { live: { targets: [url], auth: { headers: { 'x-api-key': STATIC_SECRET }, token: async () => ({ value: 'tok-ws' }) } } },
    routes: [{ prefix: '/live', pool: 'live', websocket: true }]
  })
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/live/x`, { headers: { authorization: 'Bearer client', 'x-api-key': 'client' } })
  t.teardown(() => ws.terminate())
  await once(ws, 'open')
  ws.send('hi')
  const [reply] = await once(ws, 'message') as [Buffer]
  t.equal(String(reply), 'echo: hi')
  t.equal(handshakes[0]!.authorization, 'Bearer tok-ws')
  t.equal(handshakes[0]!['x-api-key'], STATIC_SECRET)
})

t.test('a websocket handshake refused with 401 goes again with a new token; a second 401 reaches the client', async (t) => {
  // Tokens the upstream takes; anything else is refused with 401.
  const accepted = new Set(['tok-2'])
  const token = (headers: http.IncomingHttpHeaders): string | undefined => headers.authorization?.replace('Bearer ', '')
  const { url, handshakes } = await wsEcho(t, (headers) => accepted.has(token(headers) ?? ''))
  const seen = (): Array<string | undefined> => handshakes.map(token)
  let calls = 0
  const gw = await startGateway(t, {
    pools: { live: { targets: [url], auth: { token: async () => ({ value: `tok-${++calls}` }) } } },
    routes: [{ prefix: '/live', pool: 'live', websocket: true }]
  })
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/live/x`)
  t.teardown(() => ws.terminate())
  await once(ws, 'open')
  ws.send('hi')
  const [reply] = await once(ws, 'message') as [Buffer]
  t.equal(String(reply), 'echo: hi', 'the tunnel opened on the replayed handshake')
  t.same(seen(), ['tok-1', 'tok-2'], 'refused with the first token, taken with the second')
  t.equal(calls, 2)

  // Now every token is refused: one replay, then the client gets the 401.
  accepted.clear()
  handshakes.length = 0
  await new Promise((resolve) => setTimeout(resolve, 5100)) // Credentials refresh after a 401 at most once per 5 s.
  const refused = new WebSocket(`${gw.url.replace('http', 'ws')}/live/y`)
  const [, response] = await once(refused, 'unexpected-response') as [unknown, http.IncomingMessage]
  t.equal(response.statusCode, 401)
  response.resume()
  refused.on('error', () => {})
  refused.terminate()
  t.same(seen(), ['tok-2', 'tok-3'], 'one replay with a new token, then the 401 goes to the client')
})

t.test('bad auth options fail at registration without repeating the values', async (t) => {
  const { validateOptions } = await import('../lib/options/validate.js')
  const pool = (auth: unknown): unknown => ({ pools: { api: { targets: ['http://127.0.0.1:1'], auth } }, routes: [{ prefix: '/', pool: 'api' }] })
  const cases: Array<[string, unknown, RegExp]> = [
    ['a token where a function belongs', { token: 'sk-live-SECRET' }, /^pools\.api\.auth\.token: expected an async function .*got a string \(not shown/],
    ['a header value not a string', { headers: { 'x-api-key': 12345678 } }, /^pools\.api\.auth\.headers\["x-api-key"\]: expected a non-empty string, got a number/],
    ['a header value with a line break', { headers: { 'x-api-key': 'sk-SECRET\r\nx: y' } }, /^pools\.api\.auth\.headers\["x-api-key"\]: expected a header value/],
    ['auth as a string', 'sk-live-SECRET', /^pools\.api\.auth: expected \{ headers \} or \{ token \}, got a string/],
    ['Authorization beside token', { headers: { Authorization: 'Bearer x' }, token: async () => ({ value: 'x' }) }, /^pools\.api\.auth\.headers\.authorization: cannot be set beside auth\.token/],
    ['a framing header', { headers: { host: 'evil' } }, /^pools\.api\.auth\.headers\.host: expected a header other than Host/]
  ]
  for (const [name, auth, message] of cases) {
    const err = (() => { try { validateOptions(pool(auth)); return null } catch (e) { return e as Error } })()
    t.match(err?.message, message, name)
    t.notMatch(err?.message, /SECRET|12345678/, `${name}: the value is not repeated`)
  }
  const config = validateOptions(pool({ headers: { 'X-Api-Key': 'k' } }))
  t.same(config.pools.get('api')!.auth, { headers: { 'x-api-key': 'k' }, token: null }, 'header names are lower-cased')
})

t.test('refresh timing: min(30 s, 10% of the lifetime) before expiresAt, and 401 refreshes at most once in 5 s', async (t) => {
  const { Credentials } = await import('../lib/pool/credentials.js')
  const silent = { warn () {}, error () {} } as never
  let now = 1_000_000
  let calls = 0
  let lifetime = 3_600_000
  const credentials = new Credentials('api', {
    headers: {},
    token: async () => {
      calls++
      return { value: `t${calls}`, expiresAt: now + lifetime }
    }
  }, silent, () => now)
  const settle = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

  t.equal(credentials.ready(), false, 'no token before the first call')
  await credentials.wait()
  t.equal(calls, 1)
  // A one-hour token: refreshed in its last 30 s.
  now += lifetime - 31_000
  t.equal(credentials.ready(), true)
  await settle()
  t.equal(calls, 1, '31 s before the end: no refresh yet')
  lifetime = 60_000
  now += 2000
  t.equal(credentials.ready(), true, 'the old token is still used while the refresh runs')
  await settle()
  t.equal(calls, 2, '29 s before the end: refreshed in the background')
  // A one-minute token: refreshed in its last 6 s (10%).
  now += 60_000 - 6_500
  credentials.ready()
  await settle()
  t.equal(calls, 2, '6.5 s before the end of a 60 s token: not yet')
  now += 1000
  credentials.ready()
  await settle()
  t.equal(calls, 3, '5.5 s before the end: refreshed')

  const headers: Record<string, unknown> = {}
  const sent = credentials.apply(headers)
  t.equal(headers.authorization, `Bearer ${sent!}`)
  t.equal(credentials.unauthorized(sent), true, 'a 401 retires the token and starts a refresh')
  t.equal(credentials.ready(), false, 'the refused token is not used again')
  await credentials.wait()
  t.equal(calls, 4)
  const next = credentials.apply({})
  t.equal(credentials.unauthorized('an older token'), true, 'a 401 to a token already replaced needs no call')
  t.equal(credentials.unauthorized(next), false, 'a second 401 within 5 s makes no call')
  t.equal(calls, 4)
  now += 5000
  t.equal(credentials.unauthorized(next), true, 'after 5 s, a 401 refreshes again')
  await credentials.wait()
  t.equal(calls, 5)
  credentials.close()
})
