// status.store: request stories kept in a real Redis, so an id quoted from one gateway's error
// page is found from another; bounded by keep and a TTL; failing open to each instance's own
// stories while Redis is down, said once per outage and counted.
import t from 'tap'
import { Redis } from 'ioredis'
import { startGateway, waitFor, type Gateway, type LogRecord } from './helpers/gateway.js'
import { deadTarget } from './helpers/servers.js'
import { redisMissing, startRedis } from './helpers/redis.js'
import { validateOptions } from '../lib/options/validate.js'
import { OptionsError } from '../lib/index.js'
import type { RequestStory } from '../lib/observe/recorder.js'
import type { StatusReport } from '../lib/observe/report.js'

const noRedis = redisMissing()
const JSON_ACCEPT = { accept: 'application/json' }

const storeRecords = (gw: Gateway, state: string): LogRecord[] => gw.logs.filter((r) => r.storyStore === state)

/** A failed request on `gw`; its id. */
async function fail (gw: Gateway): Promise<string> {
  const res = await gw.request('/gone/x')
  await res.body.dump()
  if (res.statusCode !== 502) throw new Error(`expected 502, got ${res.statusCode}`)
  return res.headers['x-request-id'] as string
}

async function lookup (gw: Gateway, id: string): Promise<{ status: number, story: RequestStory | null }> {
  const res = await gw.request(`/_upstream/requests/${id}`, { headers: JSON_ACCEPT })
  const body = await res.body.json() as RequestStory
  return { status: res.statusCode, story: res.statusCode === 200 ? body : null }
}

t.test('status.store is validated with the path of what is wrong', async (t) => {
  const base = { pools: { p: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/p', pool: 'p' }] }
  const fails = (store: unknown, path: string, message: RegExp): void => {
    let error: unknown
    try {
      validateOptions({ ...base, status: { store } } as never)
    } catch (err) {
      error = err
    }
    t.ok(error instanceof OptionsError, `${path}: an OptionsError`)
    t.match(error, { path, message }, `${path}: ${String(message)}`)
  }
  fails('http://127.0.0.1:6379', 'status.store', /redis:\/\/ or rediss:\/\/ URL, or an ioredis client, got "http/)
  fails(6379, 'status.store', /got 6379/)
  fails({ redis: 'redis://' }, 'status.store.redis', /redis:\/\//)
  fails({ ttl: 1000 }, 'status.store.redis', /redis:\/\/ or rediss:\/\/ URL/)
  fails({ redis: 'redis://cache', ttl: -1 }, 'status.store.ttl', /duration/)
  fails({ redis: 'redis://cache', prefix: 7 }, 'status.store.prefix', /string/)
  fails({ redis: 'redis://cache', keep: 5 }, 'status.store.keep', /./)
  t.same(validateOptions({ ...base, status: { store: 'redis://cache:6379' } }).status!.store, { redis: 'redis://cache:6379', ttl: 86_400_000, prefix: 'fastify-upstream:' })
  t.same(validateOptions({ ...base, status: { store: { redis: 'rediss://cache', ttl: 60_000, prefix: 'gw1:' } } }).status!.store, { redis: 'rediss://cache', ttl: 60_000, prefix: 'gw1:' })
  t.equal(validateOptions(base).status!.store, null, 'none by default')
})

t.test('two gateways, one Redis: a story told by one is found from the other; keep and the TTL bound it', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const options = {
    pools: { gone: { targets: [await deadTarget(t)] } },
    routes: [{ prefix: '/gone', pool: 'gone' }],
    errors: { expose: 'full' as const },
    status: { keep: 3, store: { redis: redis.url, ttl: 60_000 } }
  }
  const a = await startGateway(t, options)
  const b = await startGateway(t, options)
  const client = new Redis(redis.url)
  t.teardown(() => client.disconnect())

  const id = await fail(a)
  let found: { status: number, story: RequestStory | null } = { status: 0, story: null }
  // Saving is in the background (the answer went first): bounded wait for it to land.
  for (let i = 0; i < 100 && found.status !== 200; i++) {
    found = await lookup(b, id)
    if (found.status !== 200) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(found.status, 200, 'the other gateway finds it')
  t.match(found.story, { id, pool: 'gone', route: '/gone', answer: { status: 502, error: 'connection_refused', cause: 'ECONNREFUSED' } })
  t.same(found.story, (await lookup(a, id)).story, 'the same story on both')
  const text = await b.request(`/_upstream/requests/${id}`)
  t.match(await text.body.text(), new RegExp(`^Request ${id}\\n`), 'in text for curl too')

  const ttl = await client.pttl(`fastify-upstream:{stories}:id:${id}`)
  t.ok(ttl > 50_000 && ttl <= 60_000, `a story lives status.store.ttl (${ttl} ms left)`)

  // keep is 3 across both instances: the oldest stories leave Redis as newer ones come.
  const more = [await fail(b), await fail(a), await fail(b)]
  let listed: string[] = []
  for (let i = 0; i < 100; i++) {
    listed = await client.lrange('fastify-upstream:{stories}:ids', 0, -1)
    if (listed.length === 3 && listed[0] === more[2]) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.same(listed, [...more].reverse(), 'the last three ids, newest first')
  t.equal(await client.exists(`fastify-upstream:{stories}:id:${id}`), 0, 'the oldest story is gone from Redis')
  t.equal((await lookup(b, id)).status, 404, 'and b, which never had it, no longer finds it')
  t.equal((await lookup(a, id)).status, 200, 'a still has it in its own ring (keep is per instance too)')
  const missing = await b.request('/_upstream/requests/nope')
  t.equal(missing.statusCode, 404)
  t.equal(await missing.body.text(), 'No failed or retried request with id "nope" is kept on this instance or in the shared store (status.store): the last 3 are (status.keep), and a request that succeeded at the first try is not.\n')
})

t.test('Redis down: each gateway fails open to its own stories, says so once, counts the errors, and shares again when Redis is back', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const options = {
    pools: { gone: { targets: [await deadTarget(t)] } },
    routes: [{ prefix: '/gone', pool: 'gone' }],
    errors: { expose: 'full' as const },
    status: { store: redis.url }
  }
  const a = await startGateway(t, options)
  const b = await startGateway(t, options)

  await redis.stop()
  const started = Date.now()
  const ids = [await fail(a), await fail(a), await fail(a)]
  t.ok(Date.now() - started < 3000, 'failing requests are answered without waiting on the dead store')
  await waitFor(() => storeRecords(a, 'unreachable').length > 0, 10000, 'the outage record')
  for (const id of ids) t.equal((await lookup(a, id)).status, 200, 'the gateway that served it still tells the story')
  const lost = await lookup(b, ids[0]!)
  t.equal(lost.status, 404, 'the other one cannot, and says so without hanging')
  await waitFor(() => storeRecords(b, 'unreachable').length > 0, 10000, 'b\'s outage record')
  t.equal(storeRecords(a, 'unreachable').length, 1, 'one record for the outage, however many errors')
  t.match(storeRecords(a, 'unreachable')[0], { level: 40, msg: /request story store \(Redis, status\.store\) failed: .*kept on this instance only/ })

  const report = await (await a.request('/_upstream', { headers: JSON_ACCEPT })).body.json() as StatusReport
  t.match(report.storyStore, { state: 'unreachable', outages: 1 })
  t.ok(report.storyStore!.errors >= 1, `errors counted (${report.storyStore!.errors})`)
  t.match(report.diagnosis.find((f) => f.title.includes('request story store')), { severity: 'warning', title: /unreachable since .*only its own request stories/ })
  const metrics = await (await a.request('/metrics')).body.text()
  t.match(metrics, /^fastify_upstream_story_store_up 0$/m)
  t.ok(Number(/^fastify_upstream_story_store_errors_total (\d+)$/m.exec(metrics)?.[1]) >= 1)

  await redis.start()
  await waitFor(() => storeRecords(a, 'ok').length > 0 && storeRecords(b, 'ok').length > 0, 10000, 'both gateways to see Redis back')
  t.match(storeRecords(a, 'ok')[0], { level: 30, msg: /answers again after [\d.]+ s unreachable/ })
  const id = await fail(a)
  let status = 0
  for (let i = 0; i < 100 && status !== 200; i++) {
    status = (await lookup(b, id)).status
    if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(status, 200, 'shared again')
  t.match((await (await a.request('/metrics')).body.text()), /^fastify_upstream_story_store_up 1$/m)
})
