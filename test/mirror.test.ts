// routes[].mirror with real services: copies are marked and complete, and the client's answers
// never wait for a slow mirror nor fail with a failing one; copies are bounded and counted.
import t from 'tap'
import http from 'node:http'
import { startGateway, waitFor } from './helpers/gateway.js'
import { startUpstream, type Running } from './helpers/servers.js'

interface Teardown { teardown: (fn: () => unknown) => void }

interface Seen { method: string, url: string, headers: http.IncomingHttpHeaders, body: string }

/** A mirror service that records each copy and holds its answer until released (a slow service). */
async function holdingMirror (t: Teardown): Promise<Running & { seen: Seen[], held: http.ServerResponse[], release: () => void }> {
  const seen: Seen[] = []
  const held: http.ServerResponse[] = []
  const server = await startUpstream('mirror', (req, res) => {
    let body = ''
    req.on('data', (chunk: Buffer) => { body += chunk.toString() })
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body })
      held.push(res)
    })
  })
  const release = (): void => { for (const res of held.splice(0)) res.end('mirror answer') }
  t.teardown(release)
  t.teardown(server.close)
  return Object.assign(server, { seen, held, release })
}

t.test('a copy goes to the mirror with x-mirrored-by, the client\'s Host, path and body; the client never waits for it', async (t) => {
  const main = await startUpstream('main')
  t.teardown(main.close)
  const mirror = await holdingMirror(t)
  const gw = await startGateway(t, {
    pools: { main: { targets: [main.url] }, shadow: { targets: [mirror.url] } },
    routes: [{ prefix: '/api', pool: 'main', rewritePrefix: '/v1', mirror: { pool: 'shadow' } }],
    errors: { proxyName: 'edge' }
  })
  // Every copy is held by the mirror while the client's answers all come back.
  for (let i = 0; i < 10; i++) {
    const res = await gw.request(`/api/orders?i=${i}`, { method: 'POST', body: `{"n":${i}}`, headers: { 'content-type': 'application/json', host: 'shop.example' } })
    t.equal(res.statusCode, 200)
    t.equal((await res.body.json() as { name: string }).name, 'main')
  }
  await waitFor(() => mirror.seen.length === 10, 5000, 'ten copies')
  t.equal(mirror.held.length, 10, 'all ten copies still unanswered while the clients had theirs')
  const copy = mirror.seen[3]!
  t.equal(copy.method, 'POST')
  t.equal(copy.url, '/v1/orders?i=3')
  t.equal(copy.body, '{"n":3}')
  t.equal(copy.headers['x-mirrored-by'], 'edge')
  t.equal(copy.headers.host, 'shop.example', 'Host as the client sent it')
  t.equal(copy.headers['x-forwarded-host'], 'shop.example')
  t.ok(copy.headers['x-request-id'], 'the request id goes with the copy')
  const status = await gw.request('/_upstream', { headers: { accept: 'application/json' } })
  const report = await status.body.json() as { routes: Array<{ prefix: string, mirror: Record<string, unknown> }> }
  t.same(report.routes, [{ prefix: '/api', pools: [], split: {}, mirror: { pool: 'shadow', percent: 100, inFlight: 10, answered: 0, failed: 0, skipped: 0 } }])
  mirror.release()
  let after = report
  for (let i = 0; i < 100 && after.routes[0]!.mirror.answered !== 10; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    after = await (await gw.request('/_upstream', { headers: { accept: 'application/json' } })).body.json() as typeof report
  }
  t.match(after.routes[0]!.mirror, { answered: 10, failed: 0, inFlight: 0 })
  const page = await (await gw.request('/_upstream', { headers: { accept: 'text/plain' } })).body.text()
  t.match(page, 'Route /api (since start)\n  Mirror to shadow (100% of requests): 10 copies answered, 0 failed, 0 skipped (busy or body too large), 0 in flight')
})

t.test('past maxInFlight copies are skipped; percent copies an exact share; a body over bodyLimit is not copied', async (t) => {
  const main = await startUpstream('main')
  t.teardown(main.close)
  const mirror = await holdingMirror(t)
  const gw = await startGateway(t, {
    pools: { main: { targets: [main.url] }, shadow: { targets: [mirror.url] } },
    routes: [
      { prefix: '/busy', pool: 'main', mirror: { pool: 'shadow', maxInFlight: 3 } },
      { prefix: '/half', pool: 'main', mirror: { pool: 'shadow', percent: 50 } },
      { prefix: '/small', pool: 'main', mirror: { pool: 'shadow', bodyLimit: 10 } }
    ]
  })
  for (let i = 0; i < 10; i++) {
    const res = await gw.request('/busy/x')
    t.equal(res.statusCode, 200)
    await res.body.dump()
  }
  await waitFor(() => mirror.seen.length === 3, 5000, 'three copies')
  mirror.release()
  for (let i = 0; i < 10; i++) await (await gw.request(`/half/${i}`)).body.dump()
  await waitFor(() => mirror.seen.length === 8, 5000, 'five more copies')
  mirror.release()
  t.same(mirror.seen.slice(3).map((s) => s.url), ['/1', '/3', '/5', '/7', '/9'], 'every other request')
  for (const body of ['short', 'longer than ten bytes']) {
    const res = await gw.request('/small/x', { method: 'PUT', body })
    t.equal(res.statusCode, 200)
    await res.body.dump()
  }
  await waitFor(() => mirror.seen.length === 9, 5000, 'the short body\'s copy')
  t.equal(mirror.seen[8]!.body, 'short')
  mirror.release()
  const metrics = await (await gw.request('/metrics')).body.text()
  t.match(metrics, /fastify_upstream_mirror_total\{route="\/busy",pool="shadow",outcome="skipped"\} 7/)
  t.match(metrics, /fastify_upstream_mirror_total\{route="\/small",pool="shadow",outcome="skipped"\} 1/)
  t.match(metrics, /fastify_upstream_mirror_total\{route="\/half",pool="shadow",outcome="skipped"\} 0/)
})

t.test('a failing or refusing mirror: every client answer is the main service\'s, failures counted and logged at debug only', async (t) => {
  const main = await startUpstream('main')
  t.teardown(main.close)
  const failing = await startUpstream('failing', (req) => { req.socket.destroy() })
  t.teardown(failing.close)
  const gw = await startGateway(t, {
    pools: { main: { targets: [main.url] }, broken: { targets: [failing.url] }, gone: { targets: ['http://127.0.0.1:1'] } },
    routes: [{ prefix: '/a', pool: 'main', mirror: { pool: 'broken' } }, { prefix: '/b', pool: 'main', mirror: { pool: 'gone' } }]
  })
  // Requests from here on log at debug too (each request's logger is a child made at its start).
  gw.app.log.level = 'debug'
  const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const res = await gw.request(i % 2 === 0 ? '/a/x' : '/b/x')
    return `${res.statusCode} ${(await res.body.json() as { name: string }).name}`
  }))
  t.same(new Set(answers), new Set(['200 main']))
  await waitFor(() => gw.logs.filter((r) => typeof r.mirror === 'string').length === 20, 5000, 'twenty mirror failures logged')
  const records = gw.logs.filter((r) => typeof r.mirror === 'string')
  t.ok(records.every((r) => r.level === 20), 'at debug')
  t.match(records.find((r) => r.mirror === 'gone'), { error: 'connection_refused', cause: 'ECONNREFUSED' })
  t.match(records.find((r) => r.mirror === 'broken'), { error: 'connection_terminated' })
  t.same(gw.failures().filter((r) => r.mirror === undefined), [], 'no failure record for any client request')
  t.ok(gw.logs.every((r) => r.level < 40), 'nothing at warn or error')
  const report = await (await gw.request('/_upstream', { headers: { accept: 'application/json' } })).body.json() as { routes: Array<{ mirror: { failed: number } }> }
  t.same(report.routes.map((r) => r.mirror.failed), [10, 10])
  t.equal(gw.app.upstream.pool('broken').targets()[0]!.state, 'healthy', 'copies never eject a mirror target')
})

t.test('closing the app drops copies in flight to a mirror that never answers', async (t) => {
  const main = await startUpstream('main')
  t.teardown(main.close)
  const mirror = await holdingMirror(t)
  const gw = await startGateway(t, {
    pools: { main: { targets: [main.url] }, shadow: { targets: [mirror.url] } },
    routes: [{ prefix: '/api', pool: 'main', mirror: { pool: 'shadow' } }]
  })
  await (await gw.request('/api/x')).body.dump()
  await waitFor(() => mirror.seen.length === 1, 5000, 'the copy')
  await gw.close()
  t.equal(mirror.held.length, 1, 'closed while the mirror still held the copy')
})
