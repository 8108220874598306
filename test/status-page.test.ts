// The status page and request lookup on a real gateway: JSON and HTML, the diagnosis for a slow
// and a dead target, exposure, escaping, and the ring of kept requests staying bounded.
import t from 'tap'
import { startGateway, waitFor } from './helpers/gateway.js'
import { startUpstream, deadTarget } from './helpers/servers.js'
import type { StatusReport } from '../lib/observe/report.js'
import type { RequestStory } from '../lib/observe/recorder.js'
import { Recorder } from '../lib/observe/recorder.js'
import { makeFailure } from '../lib/errors/failure.js'

const JSON_ACCEPT = { headers: { accept: 'application/json' } }

t.test('the status JSON lists every pool and target with their stats, and the diagnosis names timeouts.headers for a slow target', async (t) => {
  const slow = await startUpstream('slow', (_req, res) => { setTimeout(() => res.end('late'), 2500) })
  const fast = await startUpstream('fast')
  t.teardown(slow.close)
  t.teardown(fast.close)
  const gw = await startGateway(t, {
    pools: { slow: { targets: [slow.url] }, fast: { targets: [fast.url] } },
    routes: [{ prefix: '/slow', pool: 'slow', timeouts: { headers: 3000 } }, { prefix: '/fast', pool: 'fast' }],
    errors: { expose: 'full' },
    status: { diagnosis: { minRequests: 3 } }
  })
  const answers = await Promise.all([1, 2, 3].map(async () => await gw.request('/slow/x')))
  for (const res of answers) t.equal(res.statusCode, 200)
  await Promise.all(answers.map(async (res) => await res.body.text()))
  await (await gw.request('/fast/y')).body.text()

  const res = await gw.request('/_upstream', JSON_ACCEPT)
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /application\/json/)
  t.equal(res.headers['cache-control'], 'no-store')
  const report = await res.body.json() as StatusReport
  t.same(report.pools.map((p) => p.name), ['slow', 'fast'])
  const slowPool = report.pools[0]!
  t.equal(slowPool.targets.length, 1)
  t.equal(slowPool.targets[0]!.url, slow.url)
  t.equal(slowPool.targets[0]!.stats['1m'].requests, 3)
  t.equal(slowPool.stats['5m'].requests, 3)
  t.ok(slowPool.stats['1m'].latency!.p50 >= 2400, 'p50 reads the 2.5 s answers')
  t.equal(report.pools[1]!.stats['1m'].requests, 1)
  const finding = report.diagnosis.find((f) => f.pool === 'slow')
  t.ok(finding, 'a finding for the slow pool')
  t.match(finding!.title, /risk of 504 before timeouts\.headers \(3000 ms\) bites/)
  t.match(finding!.action, /timeouts\.headers \(now 3000 ms\)/)
})

t.test('a dead target gives a critical finding, and its failure links to the whole story', async (t) => {
  const dead = await deadTarget(t)
  const port = new URL(dead).port
  const gw = await startGateway(t, {
    pools: { gone: { targets: [dead], outlier: { consecutiveFailures: 1 } } },
    routes: [{ prefix: '/gone', pool: 'gone' }],
    errors: { expose: 'full' }
  })
  const failed = await gw.request('/gone/a')
  t.equal(failed.statusCode, 502)
  await failed.body.text()
  const id = failed.headers['x-request-id'] as string

  const report = await (await gw.request('/_upstream', JSON_ACCEPT)).body.json() as StatusReport
  const pool = report.pools[0]!
  t.equal(pool.targets[0]!.state, 'ejected')
  t.equal(pool.errors.connection_refused!.count, 1)
  t.equal(pool.errors.connection_refused!.requestId, id)
  t.equal(pool.errors.connection_refused!.cause, 'ECONNREFUSED')
  t.equal(report.diagnosis[0]!.severity, 'critical')
  t.match(report.diagnosis[0]!.title, /No target of pool "gone" can take traffic/)

  const story = await (await gw.request(`/_upstream/requests/${id}`, JSON_ACCEPT)).body.json() as RequestStory
  t.equal(story.id, id)
  t.equal(story.route, '/gone')
  t.equal(story.pool, 'gone')
  t.equal(story.method, 'GET')
  t.same(story.answer, { status: 502, error: 'connection_refused', cause: 'ECONNREFUSED', blame: 'upstream', note: 'not retried: no other target can take traffic' })
  t.same(story.poolState, [{ target: `127.0.0.1:${port}`, state: 'ejected' }], 'the pool as it stood when the request ended')
  t.equal(story.attempts.length, 1)
  t.match(story.attempts[0], { target: `127.0.0.1:${port}`, error: 'connection_refused', cause: 'ECONNREFUSED', phase: 'connect' })

  const html = await gw.request('/_upstream')
  t.match(html.headers['content-type'], /text\/html/)
  const page = await html.body.text()
  t.match(page, /<meta http-equiv="refresh" content="10">/)
  t.notMatch(page, /<script/i)
  t.ok(page.includes(`href="/_upstream/requests/${id}"`), 'the recent error links to its story')
  t.match(page, /No target of pool &quot;gone&quot; can take traffic/)

  const storyPage = await (await gw.request(`/_upstream/requests/${id}`)).body.text()
  t.match(storyPage, /connection_refused/)
  t.match(storyPage, /ECONNREFUSED/)

  const missing = await gw.request('/_upstream/requests/nope', JSON_ACCEPT)
  t.equal(missing.statusCode, 404)
  t.match(await missing.body.json(), { found: false, why: /status\.keep/ })
})

t.test('the page escapes what it reflects', async (t) => {
  const gw = await startGateway(t, {
    pools: { '<b>x</b>': { targets: [await deadTarget(t)] } },
    routes: [{ prefix: '/x', pool: '<b>x</b>' }],
    errors: { expose: 'full' }
  }, { genReqId: () => '"><img src=x onerror=alert(1)>' })
  await (await gw.request('/x/1')).body.text()
  const page = await (await gw.request('/_upstream')).body.text()
  t.notOk(page.includes('<b>x</b>'), 'the pool name is escaped')
  t.notOk(page.includes('<img'), 'the request id is escaped')
  t.ok(page.includes('&lt;b&gt;x&lt;/b&gt;'))
})

t.test('under public exposure the page answers the gateway 404; status.expose overrides, status: false removes it', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const base = { pools: { u: { targets: [u.url] } }, routes: [{ prefix: '/u', pool: 'u' }] }
  const hidden = await startGateway(t, { ...base, errors: { expose: 'public' } })
  const res = await hidden.request('/_upstream', JSON_ACCEPT)
  t.equal(res.statusCode, 404)
  t.match(await res.body.json(), { error: 'http_request_error', status: 404 })
  t.equal((await hidden.request('/_upstream/requests/1')).statusCode, 404)

  const keyed = await startGateway(t, { ...base, errors: { expose: 'public' }, status: { expose: (request) => request.headers['x-key'] === 'k' } })
  t.equal((await keyed.request('/_upstream', { headers: { 'x-key': 'k' } })).statusCode, 200)
  t.equal((await keyed.request('/_upstream')).statusCode, 404)

  const off = await startGateway(t, { ...base, errors: { expose: 'full' }, status: false })
  const gone = await off.request('/_upstream', JSON_ACCEPT)
  t.equal(gone.statusCode, 404)
  t.match(await gone.body.json(), { error: 'http_request_error' })
})

t.test('an app preHandler guards the page like any route', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { u: { targets: [u.url] } }, routes: [{ prefix: '/u', pool: 'u' }], errors: { expose: 'full' } }, {}, (app) => {
    app.addHook('preHandler', async (request, reply) => {
      if (request.url.startsWith('/_upstream') && request.headers.authorization !== 'Bearer s3cret') await reply.code(401).send({ error: 'unauthorized' })
    })
  })
  t.equal((await gw.request('/_upstream')).statusCode, 401)
  t.equal((await gw.request('/_upstream', { headers: { authorization: 'Bearer s3cret' } })).statusCode, 200)
})

t.test('the ring of kept requests stays bounded after 10 000 failures', async (t) => {
  const recorder = new Recorder(1000)
  const failure = makeFailure('connection_refused', { phase: 'connect', pool: 'p', target: 'a:1', ms: 1, cause: 'ECONNREFUSED' })
  for (let i = 0; i < 10_000; i++) {
    recorder.failed({ id: `r${i}`, method: 'GET', route: '/', pool: 'p', target: 'a:1', status: 502, ms: 1, attempts: failure.attempts, poolState: () => [] }, failure)
  }
  const kept = recorder.stories()
  t.equal(kept.length, 1000)
  t.equal(kept[0]!.id, 'r9999', 'newest first')
  t.equal(kept[999]!.id, 'r9000')
  t.equal(recorder.story('r8999'), null, 'older ones are forgotten')
  t.equal(recorder.story('r9000')!.id, 'r9000')
  t.equal(recorder.pool('p').errors.get('connection_refused')!.count, 10_000)
  t.equal(recorder.pool('p').stats.window(Date.now(), 1).requests, 10_000)
})

t.test('a request the client abandoned is counted apart: aborted, not a 5xx, not an error, not the target\'s fault', async (t) => {
  const silent = await startUpstream('silent', () => {})
  t.teardown(silent.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [silent.url] } },
    routes: [{ prefix: '/p', pool: 'p' }],
    errors: { expose: 'full' }
  })
  const controller = new AbortController()
  const pending = gw.request('/p/x', { signal: controller.signal }).catch(() => null)
  await waitFor(() => silent.hits === 1, 5000, 'the request to reach the upstream')
  controller.abort()
  await pending
  await waitFor(() => gw.logs.some((r) => r.error === 'client_aborted'), 5000, 'the abort to be seen')
  const report = await (await gw.request('/_upstream', JSON_ACCEPT)).body.json() as StatusReport
  const pool = report.pools[0]!
  t.match(pool.stats['1m'], { aborted: 1, requests: 0, status5xx: 0 })
  t.same(pool.stats['1m'].errors, {}, 'no error counted: an abort is not one')
  t.equal(pool.stats['15m'].aborted, 1)
  t.match(pool.targets[0]!.stats['1m'], { aborted: 1, requests: 0 }, 'on the target it was waiting for')
  t.equal(pool.targets[0]!.consecutiveFailures, 0, 'not a failure of the target')
  t.same(report.diagnosis, [], 'nothing to diagnose')
  const page = await (await gw.request('/_upstream', { headers: { accept: 'text/html' } })).body.text()
  t.match(page, /<th title="[^"]*">aborted<\/th>/)
})
