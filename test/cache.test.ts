// The route cache as RFC 9111 lets a shared cache behave: what is stored, for whom and for how
// long, Vary, revalidation, Age and Cache-Status, coalesced misses, and purge. Stale answers in
// place of failures are in cache-stale.test.ts, the stores in cache-stores.test.ts.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { startGateway, type Gateway } from './helpers/gateway.js'
import { startUpstream, type Running } from './helpers/servers.js'
import { validateOptions } from '../lib/options/validate.js'
import { OptionsError } from '../lib/options/check.js'
import type { UpstreamOptions } from '../lib/options/types.js'

type Answer = (req: http.IncomingMessage, res: http.ServerResponse) => void

/** An upstream whose answer the test sets, counting the requests it gets per path. */
async function upstream (t: Test, answer: Answer): Promise<Running & { set: (next: Answer) => void, seen: http.IncomingMessage[] }> {
  let current = answer
  const seen: http.IncomingMessage[] = []
  const u = await startUpstream('u', (req, res) => {
    seen.push(req)
    current(req, res)
  })
  t.teardown(u.close)
  return Object.assign(u, { set: (next: Answer) => { current = next }, seen })
}

function cacheable (cacheControl: string, body = 'hello', extra: Record<string, string> = {}): Answer {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cacheControl, ...extra })
    res.end(body)
  }
}

async function gateway (t: Test, u: Running, cache: UpstreamOptions['routes'][number]['cache'] = true, more: Partial<UpstreamOptions> = {}): Promise<Gateway> {
  return await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop', cache }],
    ...more
  })
}

async function get (gw: Gateway, path: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' | 'POST' = 'GET'): Promise<{ status: number, headers: http.IncomingHttpHeaders, body: string }> {
  const res = await gw.request(path, { method, headers })
  const body = await res.body.text()
  return { status: res.statusCode, headers: res.headers as http.IncomingHttpHeaders, body }
}

t.test('a fresh answer is stored and served without the upstream, with Age and Cache-Status', async (t) => {
  const u = await upstream(t, cacheable('max-age=60'))
  const gw = await gateway(t, u)
  const first = await get(gw, '/shop/item')
  t.equal(first.status, 200)
  t.equal(first.body, 'hello')
  t.equal(first.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  const second = await get(gw, '/shop/item')
  t.equal(second.status, 200)
  t.equal(second.body, 'hello')
  t.equal(second.headers['cache-status'], 'fastify-upstream; hit')
  t.match(second.headers.age, /^\d+$/)
  t.equal(second.headers['content-type'], 'text/plain')
  t.equal(second.headers['x-request-id'] !== undefined, true, 'the request id goes on a hit too')
  t.equal(u.hits, 1, 'the hit never reached the upstream')
})

t.test('HEAD is cached apart from GET, without a body', async (t) => {
  const u = await upstream(t, cacheable('max-age=60'))
  const gw = await gateway(t, u)
  const first = await get(gw, '/shop/h', {}, 'HEAD')
  const second = await get(gw, '/shop/h', {}, 'HEAD')
  t.equal(second.status, 200)
  t.equal(second.body, '')
  t.equal(second.headers['cache-status'], 'fastify-upstream; hit')
  t.equal(second.headers['content-length'], first.headers['content-length'])
  t.equal(u.hits, 1)
  const got = await get(gw, '/shop/h')
  t.equal(got.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  t.equal(got.body, 'hello')
})

t.test('s-maxage wins over max-age for a shared cache, and Expires counts without either', async (t) => {
  const u = await upstream(t, cacheable('max-age=0, s-maxage=60'))
  const gw = await gateway(t, u)
  await get(gw, '/shop/s')
  t.equal((await get(gw, '/shop/s')).headers['cache-status'], 'fastify-upstream; hit')
  u.set((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', date: new Date().toUTCString(), expires: new Date(Date.now() + 60_000).toUTCString() })
    res.end('expires')
  })
  await get(gw, '/shop/e')
  const hit = await get(gw, '/shop/e')
  t.equal(hit.headers['cache-status'], 'fastify-upstream; hit')
  t.equal(hit.body, 'expires')
})

t.test('what a shared cache may not store goes upstream every time', async (t) => {
  const cases: Array<[string, Answer, Record<string, string>]> = [
    ['private', cacheable('private, max-age=60'), {}],
    ['no-store', cacheable('no-store, max-age=60'), {}],
    ['no-cache', cacheable('no-cache, max-age=60'), {}],
    ['no Cache-Control nor Expires on a 200', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('x') }, {}],
    ['Set-Cookie without public', cacheable('max-age=60', 'x', { 'set-cookie': 'session=abc' }), {}],
    ['Authorization without public or s-maxage', cacheable('max-age=60'), { authorization: 'Bearer a' }],
    ['a request that says no-store', cacheable('max-age=60'), { 'cache-control': 'no-store' }],
    ['Vary: *', cacheable('max-age=60', 'x', { vary: '*' }), {}]
  ]
  for (const [what, answer, headers] of cases) {
    const u = await upstream(t, answer)
    const gw = await gateway(t, u)
    const first = await get(gw, '/shop/p', headers)
    t.equal(first.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200', `${what}: not stored`)
    const second = await get(gw, '/shop/p', headers)
    t.equal(second.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200', `${what}: not served from the cache`)
    t.equal(u.hits, 2, `${what}: both went upstream`)
    await gw.close()
  }
})

t.test('an answer to a request with Authorization is stored when public or s-maxage says so', async (t) => {
  const u = await upstream(t, cacheable('public, max-age=60'))
  const gw = await gateway(t, u)
  await get(gw, '/shop/a', { authorization: 'Bearer a' })
  const hit = await get(gw, '/shop/a', { authorization: 'Bearer a' })
  t.equal(hit.headers['cache-status'], 'fastify-upstream; hit')
  t.equal(u.hits, 1)
})

t.test('Set-Cookie with public is stored (the response opted in)', async (t) => {
  const u = await upstream(t, cacheable('public, max-age=60', 'x', { 'set-cookie': 'a=b' }))
  const gw = await gateway(t, u)
  await get(gw, '/shop/c')
  t.equal((await get(gw, '/shop/c')).headers['cache-status'], 'fastify-upstream; hit')
})

t.test('Vary keeps one answer per variant of the named request headers', async (t) => {
  const u = await upstream(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', vary: 'Accept-Language' })
    res.end(`lang ${String(req.headers['accept-language'])}`)
  })
  const gw = await gateway(t, u)
  t.equal((await get(gw, '/shop/v', { 'accept-language': 'fr' })).body, 'lang fr')
  const en = await get(gw, '/shop/v', { 'accept-language': 'en' })
  t.equal(en.body, 'lang en')
  t.equal(en.headers['cache-status'], 'fastify-upstream; fwd=vary-miss; fwd-status=200; stored')
  const fr = await get(gw, '/shop/v', { 'accept-language': 'fr' })
  t.equal(fr.body, 'lang fr')
  t.equal(fr.headers['cache-status'], 'fastify-upstream; hit')
  const en2 = await get(gw, '/shop/v', { 'accept-language': 'en' })
  t.equal(en2.body, 'lang en')
  t.equal(en2.headers['cache-status'], 'fastify-upstream; hit')
  t.equal(u.hits, 2)
})

t.test('the query string is part of the key', async (t) => {
  const u = await upstream(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
    res.end(req.url)
  })
  const gw = await gateway(t, u)
  t.equal((await get(gw, '/shop/q?a=1')).body, '/q?a=1')
  t.equal((await get(gw, '/shop/q?a=2')).body, '/q?a=2')
  t.equal((await get(gw, '/shop/q?a=1')).headers['cache-status'], 'fastify-upstream; hit')
})

t.test('a stale answer is revalidated with If-None-Match and served when the upstream says 304', async (t) => {
  let etag = '"v1"'
  const u = await upstream(t, (req, res) => {
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, { etag, 'cache-control': 'max-age=1' })
      res.end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain', etag, 'cache-control': 'max-age=1' })
    res.end(`body ${etag}`)
  })
  const gw = await gateway(t, u)
  await get(gw, '/shop/r')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  const revalidated = await get(gw, '/shop/r')
  t.equal(revalidated.status, 200)
  t.equal(revalidated.body, 'body "v1"')
  t.equal(revalidated.headers['cache-status'], 'fastify-upstream; fwd=stale; fwd-status=304; stored')
  t.equal(u.seen[1]!.headers['if-none-match'], '"v1"')
  t.equal((await get(gw, '/shop/r')).headers['cache-status'], 'fastify-upstream; hit', 'the 304 made it fresh again')
  etag = '"v2"'
  await new Promise((resolve) => setTimeout(resolve, 1100))
  const changed = await get(gw, '/shop/r')
  t.equal(changed.body, 'body "v2"')
  t.equal(changed.headers['cache-status'], 'fastify-upstream; fwd=stale; fwd-status=200; stored')
})

t.test('a stale answer with only Last-Modified is revalidated with If-Modified-Since', async (t) => {
  const modified = new Date(Date.now() - 3_600_000).toUTCString()
  const u = await upstream(t, (req, res) => {
    if (req.headers['if-modified-since'] === modified) {
      res.writeHead(304, { 'cache-control': 'max-age=1', 'last-modified': modified })
      res.end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'last-modified': modified, 'cache-control': 'max-age=1' })
    res.end('dated')
  })
  const gw = await gateway(t, u)
  await get(gw, '/shop/lm')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  const revalidated = await get(gw, '/shop/lm')
  t.equal(revalidated.body, 'dated')
  t.equal(revalidated.headers['cache-status'], 'fastify-upstream; fwd=stale; fwd-status=304; stored')
})

t.test('a client\'s own condition is answered from the stored answer: 304 when it has it', async (t) => {
  const modified = new Date(Date.now() - 3_600_000).toUTCString()
  const u = await upstream(t, cacheable('max-age=60', 'hello', { etag: 'W/"v1"', 'last-modified': modified }))
  const gw = await gateway(t, u)
  await get(gw, '/shop/cond')
  const matching = await get(gw, '/shop/cond', { 'if-none-match': '"v0", "v1"' })
  t.equal(matching.status, 304, 'weak comparison matches')
  t.equal(matching.body, '')
  t.equal(matching.headers['cache-status'], 'fastify-upstream; hit')
  t.equal(matching.headers.etag, 'W/"v1"')
  const other = await get(gw, '/shop/cond', { 'if-none-match': '"v2"' })
  t.equal(other.status, 200)
  t.equal(other.body, 'hello')
  t.equal((await get(gw, '/shop/cond', { 'if-modified-since': new Date().toUTCString() })).status, 304)
  t.equal((await get(gw, '/shop/cond', { 'if-modified-since': new Date(Date.now() - 7_200_000).toUTCString() })).status, 200)
  t.equal(u.hits, 1)
})

t.test('a request with Cache-Control: no-cache goes upstream (fwd=request)', async (t) => {
  const u = await upstream(t, cacheable('max-age=60'))
  const gw = await gateway(t, u)
  await get(gw, '/shop/n')
  const forced = await get(gw, '/shop/n', { 'cache-control': 'no-cache' })
  t.equal(forced.headers['cache-status'], 'fastify-upstream; fwd=request; fwd-status=200; stored')
  t.equal(u.hits, 2)
})

t.test('other methods pass through, marked fwd=method', async (t) => {
  const u = await upstream(t, cacheable('max-age=60'))
  const gw = await gateway(t, u)
  const posted = await get(gw, '/shop/m', {}, 'POST')
  t.equal(posted.headers['cache-status'], 'fastify-upstream; fwd=method')
  t.equal((await get(gw, '/shop/m', {}, 'POST')).status, 200)
  t.equal(u.hits, 2)
})

t.test('an answer over maxEntryBytes streams whole to the client and is not stored', async (t) => {
  const big = 'x'.repeat(200_000)
  const u = await upstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
    // No Content-Length: the size is found as it streams.
    res.write(big.slice(0, 100_000))
    setTimeout(() => { res.end(big.slice(100_000)) }, 20)
  })
  const gw = await gateway(t, u, { maxEntryBytes: 50_000 })
  const first = await get(gw, '/shop/big')
  t.equal(first.body.length, 200_000)
  const second = await get(gw, '/shop/big')
  t.equal(second.body.length, 200_000)
  t.equal(second.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; stored', 'stored was hoped for: the size was not known yet')
  t.equal(u.hits, 2)
  const declared = await upstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'content-length': String(big.length) })
    res.end(big)
  })
  const gw2 = await gateway(t, declared, { maxEntryBytes: 50_000 })
  t.equal((await get(gw2, '/shop/big')).headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200', 'a declared length over the limit is not even tried')
})

t.test('100 concurrent misses for one key make one upstream request', async (t) => {
  const u = await upstream(t, (_req, res) => {
    // Slow enough that every request arrives while the first is in flight.
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
      res.end('shared')
    }, 300)
  })
  const gw = await gateway(t, u)
  const answers = await Promise.all(Array.from({ length: 100 }, async () => await get(gw, '/shop/hot')))
  t.equal(u.hits, 1, 'one upstream request')
  t.ok(answers.every((a) => a.status === 200 && a.body === 'shared'))
  const statuses = new Set(answers.map((a) => a.headers['cache-status']))
  t.ok(statuses.has('fastify-upstream; fwd=miss; fwd-status=200; stored'), 'the first went upstream')
  t.equal(answers.filter((a) => a.headers['cache-status'] === 'fastify-upstream; fwd=miss; fwd-status=200; stored').length, 1)
})

t.test('with lock: false concurrent misses each go upstream', async (t) => {
  const u = await upstream(t, (_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
      res.end('x')
    }, 200)
  })
  const gw = await gateway(t, u, { lock: false })
  await Promise.all(Array.from({ length: 5 }, async () => await get(gw, '/shop/hot')))
  t.equal(u.hits, 5)
})

t.test('purge drops a path (every query string of it) or a whole route', async (t) => {
  const u = await upstream(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
    res.end(req.url)
  })
  const gw = await gateway(t, u)
  for (const path of ['/shop/a', '/shop/a?x=1', '/shop/b']) await get(gw, path)
  t.equal(u.hits, 3)
  t.equal(await gw.app.upstream.purge('/shop', '/shop/a'), 2)
  t.equal((await get(gw, '/shop/a')).headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  t.equal((await get(gw, '/shop/b')).headers['cache-status'], 'fastify-upstream; hit')
  t.equal(await gw.app.upstream.purge('/shop'), 2)
  t.equal((await get(gw, '/shop/b')).headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  await t.rejects(gw.app.upstream.purge('/nope'), /no caching route with prefix "\/nope"/)
})

t.test('bad cache options fail at registration with their path', async (t) => {
  const base = { pools: { p: { targets: ['http://127.0.0.1:1'] } } }
  const bad: Array<[unknown, RegExp]> = [
    ['yes', /routes\[0\]\.cache: expected true, false or an object/],
    [{ maxBytes: -1 }, /routes\[0\]\.cache\.maxBytes/],
    [{ maxBytes: 10, maxEntryBytes: 20 }, /routes\[0\]\.cache\.maxEntryBytes: expected at most maxBytes/],
    [{ store: 'memcached://x' }, /routes\[0\]\.cache\.store: expected "memory", a redis:\/\/ or rediss:\/\/ URL, or an ioredis client/],
    [{ staleIfError: 'long' }, /routes\[0\]\.cache\.staleIfError/],
    [{ lock: 1 }, /routes\[0\]\.cache\.lock/],
    [{ ttl: 5 }, /routes\[0\]\.cache/]
  ]
  for (const [cache, message] of bad) {
    let thrown: unknown = null
    try {
      validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p', cache }] } as never)
    } catch (err) {
      thrown = err
    }
    t.ok(thrown instanceof OptionsError, JSON.stringify(cache))
    t.match((thrown as Error).message, message)
  }
  const defaults = validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p', cache: true }] })
  t.same(defaults.routes[0]!.cache, { store: 'memory', maxBytes: 67108864, maxEntryBytes: 1048576, staleIfError: 0, staleWhileRevalidate: 0, lock: true, prefix: 'fastify-upstream:' })
  t.equal(validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p' }] }).routes[0]!.cache, null)
})
