import t from 'tap'
import http from 'node:http'
import { startGateway, waitFor } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import type { Problem } from '../lib/errors/problem.js'

t.test('maxConcurrent 1 with a slow target: the queue holds maxPending, the rest get 503 with Retry-After', async (t) => {
  let inFlight = 0
  let peak = 0
  const slow = await startUpstream('slow', (_req, res) => {
    peak = Math.max(peak, ++inFlight)
    setTimeout(() => { inFlight--; res.end('done') }, 150)
  })
  t.teardown(slow.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [slow.url], limits: { maxConcurrent: 1, maxPending: 2, queueTimeout: 5000 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const results = await Promise.all(Array.from({ length: 5 }, async () => {
    const res = await gw.request('/p/x', { headers: { accept: 'application/json' } })
    return { status: res.statusCode, retryAfter: res.headers['retry-after'], body: await res.body.text() }
  }))
  t.same(results.map((r) => r.status).sort(), [200, 200, 200, 503, 503], 'one in flight, two queued, two turned away')
  t.equal(peak, 1, 'the target never had more than one request')
  for (const rejected of results.filter((r) => r.status === 503)) {
    t.equal(rejected.retryAfter, '1')
    t.match(JSON.parse(rejected.body) as Problem, { error: 'connection_limit_reached', blame: 'gateway', phase: 'queue' })
    t.match((JSON.parse(rejected.body) as Problem).hint, /limits\.maxPending \(2\) requests already wait/)
  }
})

t.test('queueTimeout: a request that waits too long for room gets 503, and the log has the wait', async (t) => {
  // The first request holds the only slot until the second has been turned away: the order is
  // fixed by the test, not by how fast the machine runs two timers.
  let release: (() => void) | undefined
  const slow = await startUpstream('slow', (_req, res) => { release = () => res.end('done') })
  t.teardown(async () => { release?.(); await slow.close() })
  const gw = await startGateway(t, {
    pools: { p: { targets: [slow.url], limits: { maxConcurrent: 1, queueTimeout: 100 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const first = gw.request('/p/x')
  await waitFor(() => release !== undefined, 30_000, 'the first request to hold the slot')
  const started = Date.now()
  const second = await gw.request('/p/x', { headers: { accept: 'application/json' } })
  const took = Date.now() - started
  t.equal(second.statusCode, 503)
  t.match(await second.body.json(), { error: 'connection_limit_reached', phase: 'queue' })
  t.ok(took >= 90, `turned away after ${took} ms (queueTimeout 100 ms), while the first still held the slot`)
  release!()
  const record = gw.failures()[0]!
  t.match(record, { error: 'connection_limit_reached', status: 503 })
  t.ok((record.queueMs as number) >= 90, `queueMs ${String(record.queueMs)} in the log record`)
  t.equal((await first).statusCode, 200)
})

t.test('a queued request takes the first target that frees up', async (t) => {
  const a = await startUpstream('a', (_req, res) => { setTimeout(() => res.end('a'), 100) })
  const b = await startUpstream('b', (_req, res) => { setTimeout(() => res.end('b'), 100) })
  t.teardown(async () => { await a.close(); await b.close() })
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url, b.url], limits: { maxConcurrent: 1, maxPending: 10 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const statuses = await Promise.all(Array.from({ length: 6 }, async () => (await gw.request('/p/x')).statusCode))
  t.same(statuses, [200, 200, 200, 200, 200, 200])
  t.equal(a.hits + b.hits, 6)
})

t.test('queueTimeout bounds the whole wait, even for a request woken without room it may use', async (t) => {
  // a is busy for 1.2 s. b answers 503 after 300 ms, and that one failure ejects it. The queued
  // request wakes when b's request ends, finds b ejected and a still full, and waits again:
  // for what is left of its 400 ms, not a fresh 400 (which would end at 700 ms).
  const a = await startUpstream('a', (_req, res) => { setTimeout(() => res.end('a'), 1200) })
  const b = await startUpstream('b', (_req, res) => { setTimeout(() => { res.statusCode = 503; res.end('b') }, 300) })
  t.teardown(async () => { await a.close(); await b.close() })
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url, b.url], balancer: 'round-robin', limits: { maxConcurrent: 1, queueTimeout: 400 }, outlier: { consecutiveFailures: 1 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const first = gw.request('/p/1')
  const second = gw.request('/p/2')
  await waitFor(() => a.hits + b.hits === 2, 2000, 'both targets busy')
  const started = Date.now()
  const queued = await gw.request('/p/3', { headers: { accept: 'application/json' } })
  const took = Date.now() - started
  t.equal(queued.statusCode, 503)
  t.match(await queued.body.json(), { error: 'connection_limit_reached', phase: 'queue' })
  t.ok(took < 650, `turned away after ${took} ms: within queueTimeout (400 ms), not 300 + 400`)
  t.match(gw.app.upstream.pool('p').targets().find((target) => target.url === b.url), { state: 'ejected' })
  t.equal((await second).statusCode, 503, 'b\'s own answer passes through')
  t.equal((await first).statusCode, 200)
})

/** Opens a GET with its own connection; resolves once the response headers are in. */
async function openStream (url: string): Promise<http.ClientRequest> {
  return await new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, () => resolve(req))
    req.on('error', reject)
  })
}

t.test('defaults: 150 long-lived streams at once are all served, and the target stays healthy', async (t) => {
  const held = new Set<http.ServerResponse>()
  const u = await startUpstream('events', (req, res) => {
    if (req.url === '/ping') return res.end('pong')
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: hello\n\n')
    held.add(res)
  })
  t.teardown(async () => { for (const res of held) res.destroy(); await u.close() })
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  // More than the 128 open connections per target that used to be the default cap.
  const streams = await Promise.all(Array.from({ length: 150 }, async () => await openStream(`${gw.url}/p/events`)))
  t.teardown(() => { for (const req of streams) req.destroy() })
  const res = await gw.request('/p/ping')
  t.equal(await res.body.text(), 'pong', 'the next request is served at once')
  t.match(gw.app.upstream.pool('p').targets()[0], { state: 'healthy', failures: 0, inFlight: 150 })
  t.same(gw.failures(), [])
})

t.test('connections.perTarget, when set, makes the next request wait in the queue phase, never blamed on the target', async (t) => {
  const held = new Set<http.ServerResponse>()
  const u = await startUpstream('events', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: hello\n\n')
    held.add(res)
  })
  t.teardown(async () => { for (const res of held) res.destroy(); await u.close() })
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.url], connections: { perTarget: 2 }, limits: { queueTimeout: 300 }, outlier: { consecutiveFailures: 1 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const streams = await Promise.all([openStream(`${gw.url}/p/a`), openStream(`${gw.url}/p/b`)])
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) {
    const res = await gw.request('/p/c', { headers: { accept: 'application/json' } })
    statuses.push(res.statusCode)
    const problem = await res.body.json() as Problem
    t.match(problem, { error: 'connection_limit_reached', blame: 'gateway', phase: 'queue' })
    t.match(problem.hint, /connections\.perTarget \(2\) connections in use, and this request waited limits\.queueTimeout \(300 ms\)/)
  }
  t.same(statuses, [503, 503, 503])
  t.match(gw.app.upstream.pool('p').targets()[0], { state: 'healthy', failures: 0 }, 'not a connect timeout, not ejected')

  // When a stream ends, a waiting request takes its connection.
  const waiting = gw.request('/p/d')
  await waitFor(() => gw.app.upstream.pool('p').targets()[0]!.inFlight === 2)
  streams[0]!.destroy()
  const served = await waiting
  t.equal(served.statusCode, 200)
  served.body.destroy()
  streams[1]!.destroy()
})
