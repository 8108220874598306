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
  t.match(report.diagnosis[0]!.title, /Every target of pool "gone" is out of rotation/)

  const story = await (await gw.request(`/_upstream/requests/${id}`, JSON_ACCEPT)).body.json() as RequestStory
  t.equal(story.id, id)
  t.equal(story.route, '/gone')
  t.equal(story.pool, 'gone')
  t.equal(story.method, 'GET')
  t.same(story.answer, { status: 502, error: 'connection_refused', cause: 'ECONNREFUSED', blame: 'upstream', note: 'not retried: no other target can take traffic' })
  t.same(story.poolState, [{ target: `127.0.0.1:${port}`, state: 'ejected' }], 'the pool as it stood when the request ended')
  t.equal(story.attempts.length, 1)
  t.match(story.attempts[0], { target: `127.0.0.1:${port}`, error: 'connection_refused', cause: 'ECONNREFUSED', phase: 'connect' })

  const html = await gw.request('/_upstream', { headers: { accept: 'text/html' } })
  t.match(html.headers['content-type'], /text\/html/)
  const page = await html.body.text()
  t.match(page, /<meta http-equiv="refresh" content="10">/)
  t.notMatch(page, /<script/i)
  t.ok(page.includes(`href="/_upstream/requests/${id}"`), 'the recent error links to its story')
  t.match(page, /Every target of pool &quot;gone&quot; is out of rotation/)

  const storyPage = await (await gw.request(`/_upstream/requests/${id}`, { headers: { accept: 'text/html' } })).body.text()
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
  const page = await (await gw.request('/_upstream', { headers: { accept: 'text/html' } })).body.text()
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

t.test('a newcomer\'s small app: two targets, one killed, ten requests; the page shows the dead target and a finding within seconds', async (t) => {
  const a = await startUpstream('a', (_req, res) => { res.end('a') })
  const b = await startUpstream('b', (_req, res) => { res.end('b') })
  t.teardown(a.close)
  // Defaults everywhere, as a first deployment has them: no health checks, outlier defaults.
  const gw = await startGateway(t, { pools: { app: { targets: [a.url, b.url] } }, routes: [{ prefix: '/app', pool: 'app' }] })
  await b.close()
  const killed = Date.now()
  for (let i = 0; i < 10; i++) {
    const res = await gw.request(`/app/${i}`)
    t.equal(res.statusCode, 200, 'retries hide the dead target from clients')
    t.equal(await res.body.text(), 'a')
  }
  const dead = b.url.slice('http://'.length)
  let report: StatusReport | undefined
  await waitFor(() => {
    void gw.request('/_upstream', JSON_ACCEPT).then(async (res) => { report = await res.body.json() as StatusReport }, () => {})
    return report !== undefined && report.diagnosis.some((f) => f.target === dead)
  }, 5000, 'the finding about the dead target')
  t.ok(Date.now() - killed < 5000, `shown ${Date.now() - killed} ms after the target was killed`)
  const target = report!.pools[0]!.targets.find((x) => x.url === b.url)!
  t.ok(target.state === 'failing' || target.state === 'ejected', `the dead target is shown ${target.state}, not healthy`)
  t.match(target.why, /connection_refused \(ECONNREFUSED\)/)
  const finding = report!.diagnosis.find((f) => f.target === dead)!
  t.match(finding, { severity: 'warning', pool: 'app', title: new RegExp(`^${dead.replace(/\./g, '\\.')} of pool "app" is (failing|ejected): .*connection_refused`) })
  t.match(finding.action, /needed a retry/)

  // What plain curl gets: text, with the dead target's state and the finding.
  const text = await gw.request('/_upstream', { headers: { accept: '*/*' } })
  t.equal(text.statusCode, 200)
  t.equal(text.headers['content-type'], 'text/plain; charset=utf-8')
  const body = await text.body.text()
  t.match(body, new RegExp(`(FAILING|EJECTED) ${b.url.replace(/\./g, '\\.')} since `))
  t.match(body, new RegExp(`\\[warning\\] ${dead.replace(/\./g, '\\.')} of pool "app" is`))
})

t.test('the status page and request lookups negotiate as error answers do: text for curl, HTML for browsers, JSON for JSON', async (t) => {
  const gw = await startGateway(t, {
    pools: { gone: { targets: [await deadTarget(t)] } },
    routes: [{ prefix: '/gone', pool: 'gone' }],
    errors: { expose: 'full' }
  })
  const failed = await gw.request('/gone/a')
  t.equal(failed.statusCode, 502)
  t.equal(failed.headers['content-type'], 'text/plain; charset=utf-8', 'the error answer itself: text for a client that asks for nothing')
  await failed.body.dump()
  const id = failed.headers['x-request-id'] as string
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{}, 'text/plain; charset=utf-8', /^Upstream status at /],
    [{ accept: '*/*' }, 'text/plain; charset=utf-8', /^Upstream status at /],
    [{ accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' }, 'text/html; charset=utf-8', /^<!doctype html>/i],
    [{ accept: 'application/json' }, 'application/json; charset=utf-8', /^\{"at":/]
  ]
  for (const [headers, type, body] of cases) {
    const res = await gw.request('/_upstream', { headers })
    t.equal(res.headers['content-type'], type, `status page, Accept: ${headers.accept ?? '(none)'}`)
    t.match(await res.body.text(), body)
  }
  const story = await gw.request(`/_upstream/requests/${id}`)
  t.equal(story.statusCode, 200)
  t.equal(story.headers['content-type'], 'text/plain; charset=utf-8', 'a request lookup from curl')
  const storyText = await story.body.text()
  t.match(storyText, new RegExp(`^Request ${id}\\n`))
  t.match(storyText, /Answer: 502 connection_refused \(blame: upstream\) — cause ECONNREFUSED/)
  t.match(storyText, /1\. 127\.0\.0\.1:\d+: connection_refused \(ECONNREFUSED\) in connect after \d+ ms/)
  const html = await gw.request(`/_upstream/requests/${id}`, { headers: { accept: 'text/html' } })
  t.equal(html.headers['content-type'], 'text/html; charset=utf-8')
  await html.body.dump()
  const json = await gw.request(`/_upstream/requests/${id}?format=json`)
  t.equal(json.headers['content-type'], 'application/json; charset=utf-8', '?format=json overrides')
  t.equal((await json.body.json() as RequestStory).id, id)
  const missing = await gw.request('/_upstream/requests/nope')
  t.equal(missing.statusCode, 404)
  t.equal(missing.headers['content-type'], 'text/plain; charset=utf-8')
  t.equal(await missing.body.text(), 'No failed or retried request with id "nope" is kept: the last 1000 are (status.keep), and a request that succeeded at the first try is not.\n')
})

t.test('a pool whose last requests all failed is a critical finding from the third one, and its next success ends it', async (t) => {
  let up = false
  const flaky = await startUpstream('flaky', (_req, res) => {
    if (up) { res.end('ok'); return }
    res.statusCode = 503
    res.end('down')
  })
  t.teardown(flaky.close)
  // Outlier detection off and no checks: the target stays in rotation, answering 503.
  const gw = await startGateway(t, { pools: { orders: { targets: [flaky.url], outlier: false } }, routes: [{ prefix: '/orders', pool: 'orders' }], errors: { expose: 'full', intercept: [503] } })
  const report = async (): Promise<StatusReport> => await (await gw.request('/_upstream', JSON_ACCEPT)).body.json() as StatusReport
  const streakFinding = (r: StatusReport) => r.diagnosis.find((f) => f.title.startsWith('The last'))
  for (let i = 0; i < 2; i++) await (await gw.request('/orders/x')).body.dump()
  t.equal(streakFinding(await report()), undefined, 'two failures are not yet a streak')
  await (await gw.request('/orders/x')).body.dump()
  const finding = streakFinding(await report())
  t.match(finding, {
    severity: 'critical',
    pool: 'orders',
    title: 'The last 3 requests to pool "orders" all failed: 3 errors, all upstream_error_status.',
    evidence: { failedInARow: 3, upstream_error_status: 3 },
    action: /pools\.orders\.outlier is off, so a target that keeps failing stays in rotation; set pools\.orders\.health\.path/
  })
  t.match(finding!.evidence.since, /^\d{4}-\d\d-\d\dT/)
  up = true
  t.equal(await (await gw.request('/orders/x')).body.text(), 'ok')
  t.equal(streakFinding(await report()), undefined, 'a success ends the streak')
})
