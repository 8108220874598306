// Choosing the pool (routes[].match, split; pools.<name>.sticky) with real upstreams: which
// service answers, the cookies that keep a client where it was sent, and where the choice shows.
import t from 'tap'
import { startGateway, type Gateway } from './helpers/gateway.js'
import { startUpstream, type Running } from './helpers/servers.js'

interface Teardown { teardown: (fn: () => unknown) => void }

async function upstreams (t: Teardown, ...names: string[]): Promise<Record<string, Running>> {
  const out: Record<string, Running> = {}
  for (const name of names) {
    out[name] = await startUpstream(name)
    t.teardown(out[name].close)
  }
  return out
}

/** Which upstream answered (the echo's name), and the Set-Cookie values. */
async function who (gw: Gateway, path: string, headers: Record<string, string> = {}): Promise<{ name: string, cookies: string[] }> {
  const res = await gw.request(path, { headers })
  const body = await res.body.json() as { name: string }
  const field = res.headers['set-cookie']
  return { name: body.name, cookies: field === undefined ? [] : Array.isArray(field) ? field : [field] }
}

const cookiePair = (setCookie: string): string => setCookie.split(';')[0]!

t.test('match: a header, cookie or query parameter sends the request to its pool; others go to the route\'s', async (t) => {
  const u = await upstreams(t, 'stable', 'canary', 'beta')
  const gw = await startGateway(t, {
    pools: { stable: { targets: [u.stable!.url] }, canary: { targets: [u.canary!.url] }, beta: { targets: [u.beta!.url] } },
    routes: [{
      prefix: '/api',
      pool: 'stable',
      match: [
        { header: { 'x-canary': 'always' }, pool: 'canary' },
        { cookie: { tester: /^(ada|grace)$/ }, pool: 'beta' },
        { query: { pool: 'canary' }, pool: 'canary' }
      ]
    }]
  })
  t.equal((await who(gw, '/api/x', { 'x-canary': 'always' })).name, 'canary')
  t.equal((await who(gw, '/api/x', { cookie: 'tester=grace' })).name, 'beta')
  t.equal((await who(gw, '/api/x?pool=canary')).name, 'canary')
  t.equal((await who(gw, '/api/x', { cookie: 'tester=bob' })).name, 'stable')
  t.equal((await who(gw, '/api/x')).name, 'stable')
  // The pool that served each answer is in the record Fastify writes for it.
  const completed = gw.logs.filter((r) => r.msg === 'request completed').map((r) => r.pool)
  t.same(completed, ['canary', 'beta', 'canary', 'stable', 'stable'])
})

t.test('split: over 1 000 new clients the canary takes its share within 3 points; a client keeps its pool', async (t) => {
  const u = await upstreams(t, 'stable', 'canary')
  const gw = await startGateway(t, {
    pools: { stable: { targets: [u.stable!.url] }, canary: { targets: [u.canary!.url] } },
    routes: [{ prefix: '/app', pool: 'stable', split: { canary: 20 } }],
    errors: { proxyName: 'edge' }
  }, { logger: { level: 'warn' } })
  const counts: Record<string, number> = { stable: 0, canary: 0 }
  const kept: Array<{ name: string, cookie: string }> = []
  let withoutCookie = 0
  // Ten clients at a time, each new (no cookie): 1 000 requests, bounded.
  for (let batch = 0; batch < 100; batch++) {
    const answers = await Promise.all(Array.from({ length: 10 }, async () => await who(gw, '/app/page')))
    for (const { name, cookies } of answers) {
      counts[name]!++
      if (cookies.length !== 1) withoutCookie++
      else if (kept.length < 40) kept.push({ name, cookie: cookiePair(cookies[0]!) })
    }
  }
  t.equal(withoutCookie, 0, 'every new client got its cookie')
  const share = counts.canary! / 10
  t.ok(Math.abs(share - 20) <= 3, `canary took ${share}% of 1000 requests (asked 20%)`)
  t.match(kept[0]!.cookie, /^edge-split=[^;]+$/, 'the cookie is named after the gateway')
  t.notMatch(kept.map((k) => k.cookie).join(' '), /canary|stable/, 'and names no pool')
  // Each of 40 clients comes back five times with its cookie: always the same pool, no new cookie.
  for (const client of kept) {
    for (let i = 0; i < 5; i++) {
      const again = await who(gw, '/app/page', { cookie: `other=1; ${client.cookie}` })
      if (again.name !== client.name || again.cookies.length !== 0) {
        t.fail(`a client sent to ${client.name} went to ${again.name} (cookies ${again.cookies.join(', ')})`)
        return
      }
    }
  }
  t.ok(kept.some((k) => k.name === 'canary') && kept.some((k) => k.name === 'stable'), 'both pools among the returning clients')
  t.pass('200 returning requests stayed on their pool')
})

t.test('sticky: the client stays on its target while it is in rotation, then moves and the cookie is rewritten', async (t) => {
  const u = await upstreams(t, 'a', 'b', 'c')
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.a!.url, u.b!.url, u.c!.url], sticky: { cookie: 'srv', ttl: 600_000 } } },
    routes: [{ prefix: '/s', pool: 'p' }]
  })
  const first = await who(gw, '/s/x')
  t.equal(first.cookies.length, 1)
  const set = first.cookies[0]!
  t.match(set, /^srv=[A-Za-z0-9_-]{16}; Max-Age=600; Path=\/; HttpOnly; SameSite=Lax$/)
  t.notMatch(set, /127\.0\.0\.1|:\d{2,5}/, 'no address in the cookie')
  const cookie = cookiePair(set)
  for (let i = 0; i < 9; i++) {
    const again = await who(gw, '/s/x', { cookie })
    t.equal(again.name, first.name, 'the same target')
    t.same(again.cookies, [], 'and no new cookie')
  }
  t.equal(u[first.name]!.hits, 10, 'round-robin would have spread these')
  gw.app.upstream.drain('p', u[first.name]!.url)
  const moved = await who(gw, '/s/x', { cookie })
  t.not(moved.name, first.name, 'a drained target is left for the balancer\'s choice')
  t.equal(moved.cookies.length, 1, 'and the cookie names the new one')
  const newCookie = cookiePair(moved.cookies[0]!)
  t.not(newCookie, cookie)
  for (let i = 0; i < 3; i++) t.equal((await who(gw, '/s/x', { cookie: newCookie })).name, moved.name)
})

t.test('sticky: Secure when the client came over TLS (as trustProxy reads it); a failed answer sets no affinity', async (t) => {
  const u = await upstreams(t, 'a')
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.a!.url], sticky: {} }, dead: { targets: ['http://127.0.0.1:1'], sticky: {}, retry: { retries: 0 } } },
    routes: [{ prefix: '/s', pool: 'p' }, { prefix: '/dead', pool: 'dead' }]
  }, { trustProxy: true })
  const over = await who(gw, '/s/x', { 'x-forwarded-proto': 'https' })
  t.match(over.cookies[0], /^upstream=[^;]+; Path=\/; HttpOnly; Secure; SameSite=Lax$/, 'a session cookie by default, Secure')
  const plain = await who(gw, '/s/x')
  t.notMatch(plain.cookies[0], /Secure/)
  const failed = await gw.request('/dead/x')
  t.equal(failed.statusCode, 502)
  t.equal(failed.headers['set-cookie'], undefined)
  await failed.body.dump()
})

t.test('the status page and the metrics count each route\'s requests per pool and how the pool was chosen', async (t) => {
  const u = await upstreams(t, 'stable', 'canary')
  const gw = await startGateway(t, {
    pools: { stable: { targets: [u.stable!.url] }, canary: { targets: [u.canary!.url] } },
    routes: [{ prefix: '/app', pool: 'stable', split: { canary: 10 }, match: [{ header: { 'x-canary': '1' }, pool: 'canary' }] }, { prefix: '/plain', pool: 'stable' }]
  })
  for (let i = 0; i < 100; i++) await who(gw, '/app/x')
  for (let i = 0; i < 3; i++) await who(gw, '/app/x', { 'x-canary': '1' })
  await who(gw, '/plain/x')
  const report = await (await gw.request('/_upstream', { headers: { accept: 'application/json' } })).body.json() as { routes: Array<{ prefix: string, pools: Array<{ pool: string, match: number, split: number, route: number }>, split: Record<string, number> }> }
  t.equal(report.routes.length, 1, 'a route with one pool has nothing to count')
  const [route] = report.routes
  t.equal(route!.prefix, '/app')
  t.same(route!.split, { canary: 10 })
  const byPool = Object.fromEntries(route!.pools.map((p) => [p.pool, p]))
  t.equal(byPool.canary!.match, 3)
  t.equal(byPool.canary!.split + byPool.stable!.split, 100)
  t.ok(Math.abs(byPool.canary!.split - 10) <= 3, `canary split ${byPool.canary!.split} of 100`)
  const text = await (await gw.request('/_upstream', { headers: { accept: 'text/plain' } })).body.text()
  t.match(text, /Route \/app \(since start\)\n {2}(stable|canary): \d+ requests, [\d.]+% of 103/)
  t.match(text, /canary: \d+ requests, [\d.]+% of 103 \(split asks 10%\): 3 by match, \d+ by split/)
  const html = await (await gw.request('/_upstream', { headers: { accept: 'text/html' } })).body.text()
  t.match(html, /<h2>Route <code>\/app<\/code><\/h2>/)
  const metrics = await (await gw.request('/metrics')).body.text()
  t.match(metrics, /fastify_upstream_routed_total\{route="\/app",pool="canary",by="match"\} 3/)
  t.match(metrics, new RegExp(`fastify_upstream_routed_total\\{route="/app",pool="canary",by="split"\\} ${byPool.canary!.split}`))
  t.match(metrics, /fastify_upstream_requests_total\{pool="canary",target="127\.0\.0\.1:\d+",status_class="2xx"\} \d+/, 'the requests of the pool that served them')
})
