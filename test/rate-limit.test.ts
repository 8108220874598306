// Rate limits: the 429 in the gateway's format with its headers, counts shared by two gateways
// through a real Redis, and what happens when that Redis dies, stalls and comes back.
import t from 'tap'
import { Redis } from 'ioredis'
import { startGateway, waitFor, type Gateway, type LogRecord } from './helpers/gateway.js'
import { deadTarget, startUpstream } from './helpers/servers.js'
import { redisMissing, startRedis } from './helpers/redis.js'
import { validateOptions } from '../lib/options/validate.js'
import { OptionsError } from '../lib/options/check.js'
import type { Problem } from '../lib/errors/problem.js'
import type { StatusReport } from '../lib/observe/report.js'
import { proxyStatus, ourProxyStatus } from './helpers/proxy-status.js'

const JSON_ACCEPT = { accept: 'application/json' }
const noRedis = redisMissing()

/** Store outage records: the warn when it starts and the info when it ends. */
const storeRecords = (gw: Gateway, state: 'unreachable' | 'ok'): LogRecord[] => gw.logs.filter((r) => r.rateLimitStore === state)

async function statuses (gw: Gateway, path: string, n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const res = await gw.request(path)
    await res.body.dump()
    out.push(res.statusCode)
  }
  return out
}

t.test('a 429 from the in-memory limiter is in the negotiated format with Retry-After, Proxy-Status and RateLimit-*', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    rateLimit: { max: 1, timeWindow: 60000 }
  })
  const allowed = await gw.request('/shop/x')
  await allowed.body.dump()
  t.equal(allowed.statusCode, 200)
  t.equal(allowed.headers['ratelimit-limit'], '1', 'an allowed answer says the limit')
  t.equal(allowed.headers['ratelimit-remaining'], '0')

  const json = await gw.request('/shop/x', { headers: JSON_ACCEPT })
  t.equal(json.statusCode, 429)
  t.match(json.headers['content-type'], /^application\/problem\+json/)
  t.match(ourProxyStatus(json.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_denied' } })
  t.match(json.headers['retry-after'], /^\d+$/)
  t.ok(Number(json.headers['retry-after']) > 50 && Number(json.headers['retry-after']) <= 60, 'Retry-After is the rest of the window, in seconds')
  t.equal(json.headers['ratelimit-limit'], '1')
  t.equal(json.headers['ratelimit-remaining'], '0')
  t.match(json.headers['ratelimit-reset'], /^\d+$/)
  t.match(await json.body.json() as Problem, { status: 429, error: 'http_request_denied', blame: 'client', temporary: true, detail: /^Rate limit exceeded, retry in/ })

  const html = await gw.request('/shop/x', { headers: { accept: 'text/html' } })
  t.equal(html.statusCode, 429)
  t.match(html.headers['content-type'], /^text\/html/)
  t.match(await html.body.text(), /Too many requests/)
  t.match(html.headers['retry-after'], /^\d+$/)

  const text = await gw.request('/shop/x')
  t.equal(text.statusCode, 429)
  t.match(text.headers['content-type'], /^text\/plain/)
  t.match(await text.body.text(), /^429 Too many requests/)
  t.equal(text.headers['ratelimit-limit'], '1')
  t.equal(u.hits, 1, 'no limited request reached the upstream')
})

t.test('enableDraftSpec: false: the 429 carries the older X-RateLimit-* headers instead', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    rateLimit: { max: 1, timeWindow: 60000, enableDraftSpec: false }
  })
  await (await gw.request('/shop/x')).body.dump()
  const res = await gw.request('/shop/x', { headers: JSON_ACCEPT })
  await res.body.dump()
  t.equal(res.statusCode, 429)
  t.equal(res.headers['x-ratelimit-limit'], '1')
  t.equal(res.headers['x-ratelimit-remaining'], '0')
  t.match(res.headers['x-ratelimit-reset'], /^\d+$/)
  t.equal(res.headers['retry-after'], res.headers['x-ratelimit-reset'], 'Retry-After is the reset time')
  t.equal(res.headers['ratelimit-limit'], undefined)
})

t.test('a route\'s own limit counts its prefix and every path below it as one', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/limited', pool: 'shop', rateLimit: { max: 2, timeWindow: 60000 } }, { prefix: '/other', pool: 'shop', rateLimit: { max: 1, timeWindow: 60000 } }]
  })
  const paths = ['/limited', '/limited/x', '/limited/y', '/limited', '/other/z', '/other']
  const got: number[] = []
  for (const path of paths) got.push(...await statuses(gw, path, 1))
  t.same(got, [200, 200, 429, 429, 200, 429], 'two in all under /limited, and /other counts on its own')
})

t.test('keyGenerator counts by a header: each API key has its own limit', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    rateLimit: { max: 1, timeWindow: 60000, keyGenerator: (request) => String(request.headers['x-api-key'] ?? request.ip) }
  })
  const as = async (key: string): Promise<number> => {
    const res = await gw.request('/shop/x', { headers: { 'x-api-key': key } })
    await res.body.dump()
    return res.statusCode
  }
  t.same([await as('a'), await as('b'), await as('a'), await as('b')], [200, 200, 429, 429])
})

t.test('rateLimit.redis and onStoreError are checked at registration, with their path', async (t) => {
  const base = { pools: { p: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/p', pool: 'p' }] }
  const fails = (rateLimit: unknown, path: string, message: RegExp): void => {
    let error: unknown = null
    try {
      validateOptions({ ...base, rateLimit })
    } catch (err) {
      error = err
    }
    t.ok(error instanceof OptionsError, `${path}: an OptionsError`)
    t.match(error, { path, message }, `${path}: ${String(message)}`)
  }
  fails({ redis: 'http://127.0.0.1:6379' }, 'rateLimit.redis', /redis:\/\/ or rediss:\/\/ URL, or an ioredis client, got "http/)
  fails({ redis: 'redis://' }, 'rateLimit.redis', /redis:\/\//)
  fails({ redis: { host: '127.0.0.1' } }, 'rateLimit.redis', /ioredis client, got an object/)
  fails({ redis: 6379 }, 'rateLimit.redis', /got 6379/)
  fails({ onStoreError: 'maybe' }, 'rateLimit.onStoreError', /one of "allow", "deny"/)
  fails({ skipOnError: true }, 'rateLimit.skipOnError', /rateLimit.onStoreError/)
  fails({ redis: 'redis://127.0.0.1', store: class {} }, 'rateLimit.store', /not both/)
  fails('yes', 'rateLimit', /an object/)
  t.throws(() => validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p', rateLimit: { redis: 'redis://127.0.0.1' } }] }),
    { path: 'routes[0].rateLimit.redis', message: /set it once for all routes, as rateLimit.redis/ })

  const config = validateOptions({ ...base, rateLimit: { max: 5, redis: 'rediss://user:secret@cache:6380/2', onStoreError: 'deny' } })
  t.same(config.rateLimit, { plugin: { enableDraftSpec: true, max: 5 }, redis: 'rediss://user:secret@cache:6380/2', onStoreError: 'deny' }, 'our keys are not passed on to @fastify/rate-limit')
  t.equal(validateOptions({ ...base, rateLimit: {} }).rateLimit!.onStoreError, 'allow', 'fail open by default')
  t.equal(validateOptions(base).rateLimit, null, 'no limit anywhere, no limiter')
  t.same(validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p', rateLimit: { max: 1 } }] }).rateLimit!.plugin, { enableDraftSpec: true, global: false }, 'a route\'s own limit alone: nothing global')
})

t.test('two gateways share one Redis count; when Redis dies they fail open, say so once, and recover', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const u = await startUpstream('u')
  t.teardown(u.close)
  const options = {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    errors: { expose: 'full' as const },
    rateLimit: { max: 10, timeWindow: 60000, redis: redis.url }
  }
  const a = await startGateway(t, options)
  const b = await startGateway(t, options)

  const answers: number[] = []
  for (let i = 0; i < 30; i++) {
    const res = await (i % 2 === 0 ? a : b).request('/shop/x')
    await res.body.dump()
    answers.push(res.statusCode)
  }
  t.equal(answers.filter((s) => s === 200).length, 10, 'the limit holds across both gateways')
  t.equal(answers.filter((s) => s === 429).length, 20)
  t.same(answers.slice(0, 10), Array(10).fill(200), 'the first ten pass, whichever gateway took them')
  t.equal(u.hits, 10)

  const denied = await b.request('/shop/x', { headers: JSON_ACCEPT })
  t.equal(denied.statusCode, 429)
  t.match(ourProxyStatus(denied.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_denied' } })
  t.match(denied.headers['retry-after'], /^\d+$/)
  t.ok(Number(denied.headers['retry-after']) > 0 && Number(denied.headers['retry-after']) <= 60)
  t.equal(denied.headers['ratelimit-limit'], '10')
  t.equal(denied.headers['ratelimit-remaining'], '0')
  t.match(await denied.body.json() as Problem, { status: 429, error: 'http_request_denied', blame: 'client' })
  t.same([...storeRecords(a, 'unreachable'), ...storeRecords(b, 'unreachable')], [], 'no outage while Redis answers')

  await redis.stop()
  const started = Date.now()
  t.same(await statuses(a, '/shop/x', 5), [200, 200, 200, 200, 200], 'fail open: limited clients pass while Redis is down')
  t.ok(Date.now() - started < 5000, 'and without waiting on the dead store')
  await waitFor(() => storeRecords(a, 'unreachable').length > 0, 10000, 'the outage record')
  t.same(await statuses(a, '/shop/x', 5), [200, 200, 200, 200, 200])
  t.same(await statuses(b, '/shop/x', 1), [200], 'on the other gateway too')
  const warned = storeRecords(a, 'unreachable')
  t.equal(warned.length, 1, 'exactly one record for the outage')
  t.equal(warned[0]!.level, 40, 'at warn')
  t.match(warned[0]!.msg, /rate limit store \(Redis\) failed: .*requests are let through without a limit/)

  const report = await (await a.request('/_upstream', { headers: JSON_ACCEPT })).body.json() as StatusReport
  t.match(report.rateLimitStore, { state: 'unreachable', onStoreError: 'allow', outages: 1 })
  t.ok(report.rateLimitStore!.errors >= 10, `the errors since are counted (${report.rateLimitStore!.errors})`)
  const finding = report.diagnosis.find((f) => f.title.includes('rate limit store'))
  t.match(finding, { severity: 'warning', title: /unreachable since .*failing open/ })
  const page = await (await a.request('/_upstream', { headers: { accept: 'text/html' } })).body.text()
  t.match(page, /Rate limit store<\/h2><p>Redis \(rateLimit\.redis\): <strong class="bad">unreachable<\/strong> since <time>[^<]+<\/time>, failing open/)

  await redis.start()
  await waitFor(() => storeRecords(a, 'ok').length > 0 && storeRecords(b, 'ok').length > 0, 10000, 'both gateways to see Redis back')
  const recovered = storeRecords(a, 'ok')
  t.equal(recovered.length, 1, 'one record for the recovery')
  t.equal(recovered[0]!.level, 30, 'at info')
  t.match(recovered[0]!.msg, /answers again after [\d.]+ s unreachable; \d+ errors during the outage/)
  t.equal(storeRecords(a, 'unreachable').length, 1, 'still one outage record')
  // The new Redis starts empty: the limit counts from zero again, shared as before.
  const after = [...await statuses(a, '/shop/x', 6), ...await statuses(b, '/shop/x', 6)]
  t.same(after, [...Array(10).fill(200), 429, 429], 'limited again, across both')
  const healthy = await (await a.request('/_upstream', { headers: JSON_ACCEPT })).body.json() as StatusReport
  t.match(healthy.rateLimitStore, { state: 'ok', outages: 1 })
  t.notOk(healthy.diagnosis.some((f) => f.title.includes('rate limit store')), 'no finding once it answers')
  const metrics = await (await a.request('/metrics')).body.text()
  t.match(metrics, /^fastify_upstream_rate_limit_store_up 1$/m)
  t.ok(Number(/^fastify_upstream_rate_limit_store_errors_total (\d+)$/m.exec(metrics)?.[1]) >= 10, 'the errors of the outage stay counted')
})

t.test('onStoreError "deny": a dead Redis gets a fast 503 in the gateway format', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    errors: { expose: 'full' },
    rateLimit: { max: 100, timeWindow: 60000, redis: redis.url, onStoreError: 'deny' }
  })
  t.same(await statuses(gw, '/shop/x', 2), [200, 200])
  await redis.stop()
  const started = Date.now()
  const res = await gw.request('/shop/x', { headers: JSON_ACCEPT })
  const ms = Date.now() - started
  t.equal(res.statusCode, 503)
  t.ok(ms < 1500, `answered in ${ms} ms, not held on the dead store`)
  t.match(proxyStatus(res.headers['proxy-status']), [{ proxy: 'fastify-upstream', params: { error: 'proxy_internal_error', details: /^route / } }])
  t.equal(res.headers['retry-after'], '1')
  t.match(await res.body.json() as Problem, {
    status: 503,
    error: 'rate_limit_store_unavailable',
    blame: 'gateway',
    temporary: true,
    hint: /rateLimit.onStoreError is "deny"/
  })
  t.equal(u.hits, 2, 'the refused request never reached the upstream')
  t.match(gw.failures().at(-1), { level: 50, error: 'rate_limit_store_unavailable', status: 503 })
  t.equal(gw.logs.filter((r) => r.rateLimitStore === 'unreachable').length, 1)
  const report = await (await gw.request('/_upstream', { headers: JSON_ACCEPT })).body.json() as StatusReport
  t.match(report.diagnosis.find((f) => f.title.includes('rate limit store')), { severity: 'critical', title: /failing closed/ })
})

t.test('a stalled Redis holds no request longer than the store timeout: allowed, or refused with "deny"', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const u = await startUpstream('u')
  t.teardown(u.close)
  const route = { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }] }
  const open = await startGateway(t, { ...route, rateLimit: { max: 100, redis: redis.url } })
  const closed = await startGateway(t, { ...route, rateLimit: { max: 100, redis: redis.url, onStoreError: 'deny' } })
  t.same([...await statuses(open, '/shop/x', 1), ...await statuses(closed, '/shop/x', 1)], [200, 200])

  redis.stall()
  t.teardown(redis.resume)
  const timed = async (gw: Gateway): Promise<[number, number]> => {
    const started = Date.now()
    const res = await gw.request('/shop/x')
    await res.body.dump()
    return [res.statusCode, Date.now() - started]
  }
  const [[openStatus, openMs], [closedStatus, closedMs]] = await Promise.all([timed(open), timed(closed)])
  t.equal(openStatus, 200, 'fail open')
  t.equal(closedStatus, 503, 'fail closed')
  for (const ms of [openMs, closedMs]) t.ok(ms >= 500 && ms < 4000, `waited for the store's bound, not forever (${ms} ms)`)
  t.equal(open.logs.filter((r) => r.rateLimitStore === 'unreachable').length, 1)
  redis.resume()
})

t.test('a gateway whose Redis is down at start still starts, and fails open', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const deadRedis = new URL(await deadTarget(t))
  const started = Date.now()
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop' }], rateLimit: { max: 1, redis: `redis://${deadRedis.host}` } })
  t.ok(Date.now() - started < 5000, 'it did not wait long for Redis')
  t.same(await statuses(gw, '/shop/x', 3), [200, 200, 200])
  t.equal(storeRecords(gw, 'unreachable').length, 1, 'one warn for the outage')
  const metrics = await (await gw.request('/metrics')).body.text()
  t.match(metrics, /^fastify_upstream_rate_limit_store_up 0$/m, 'Prometheus sees the store down')
  const errors = Number(/^fastify_upstream_rate_limit_store_errors_total (\d+)$/m.exec(metrics)?.[1])
  t.ok(errors >= 3, `and counts its failed counts (${errors})`)
  await gw.close()
})

t.test('a client passed in is used as it is and left open when the app closes', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const u = await startUpstream('u')
  t.teardown(u.close)
  const client = new Redis(redis.url, { maxRetriesPerRequest: 0 })
  t.teardown(() => client.disconnect())
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop', rateLimit: { max: 1, timeWindow: 60000 } }],
    rateLimit: { global: false, redis: client, nameSpace: 'mine-' }
  })
  t.same([...await statuses(gw, '/shop/x', 1), ...await statuses(gw, '/shop', 1)], [200, 429], 'the route\'s own limit counts in the shared store, prefix and below as one')
  t.ok((await client.keys('mine-*')).length > 0, 'under the given nameSpace')
  await gw.close()
  t.equal(client.status, 'ready', 'the user\'s client is still open')
  t.equal(await client.ping(), 'PONG')
})
