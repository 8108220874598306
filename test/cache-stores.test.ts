// Where answers are kept: the memory store holds to maxBytes (least recently used out first),
// and a Redis store is shared by every gateway instance and fails open (an outage is a miss,
// logged once, counted), with a real redis-server stopped and started mid-test.
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { startGateway, waitFor, type Gateway } from './helpers/gateway.js'
import { startUpstream, type Running } from './helpers/servers.js'
import { redisMissing, startRedis } from './helpers/redis.js'
import { MemoryStore, type StoredAnswer } from '../lib/cache/store.js'
import type { StatusReport } from '../lib/observe/report.js'
import type { UpstreamOptions } from '../lib/options/types.js'

const noRedis = redisMissing()

async function cacheable (t: Test, size = 5): Promise<Running> {
  const u = await startUpstream('u', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
    res.end(`${req.url ?? ''} `.padEnd(size, 'x'))
  })
  t.teardown(u.close)
  return u
}

async function gateway (t: Test, u: Running, cache: UpstreamOptions['routes'][number]['cache']): Promise<Gateway> {
  return await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop', cache }],
    status: { path: '/_upstream' },
    metrics: { path: '/metrics' }
  })
}

/** Instances behind one load balancer see one Host: the key includes it. */
const HOST = { host: 'shop.example' }

async function cacheStatus (gw: Gateway, path: string): Promise<string> {
  const res = await gw.request(path, { headers: HOST })
  await res.body.dump()
  return String(res.headers['cache-status'])
}

async function report (gw: Gateway): Promise<StatusReport> {
  return (await (await gw.request('/_upstream', { headers: { accept: 'application/json' } })).body.json()) as StatusReport
}

function answer (variant: string, bytes: number): StoredAnswer {
  return { policy: { v: 1, t: Date.now(), sh: true, ch: 0.1, imm: 0, st: 200, resh: {}, rescc: {}, m: 'GET', a: true, reqh: null, reqcc: {} }, body: Buffer.alloc(bytes), variant, deleteAt: Date.now() + 60_000 }
}

t.test('the memory store holds to maxBytes when filled past it, the least recently used out first', async (t) => {
  const store = new MemoryStore(10_000)
  for (let i = 0; i < 50; i++) {
    await store.set(`k${i}`, answer('', 900))
    t.ok(store.bytes <= 10_000, `held ${store.bytes} bytes after ${i + 1} answers`)
    // k0 is read after every write: the most recently used, it is never the one to go.
    t.equal((await store.get('k0')).length, 1)
  }
  t.equal((await store.get('k1')).length, 0, 'an old, unread answer went')
  t.equal((await store.get('k49')).length, 1, 'the newest stays')
})

t.test('the memory store through the gateway: filled past maxBytes, it holds no more, and says so', async (t) => {
  const u = await cacheable(t, 2000)
  const gw = await gateway(t, u, { maxBytes: 20_000, maxEntryBytes: 5000 })
  for (let i = 0; i < 40; i++) t.equal(await cacheStatus(gw, `/shop/${i}`), 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  const cache = (await report(gw)).caches![0]!
  t.ok(cache.bytes! <= 20_000 && cache.bytes! > 10_000, `held ${cache.bytes} of 20000 bytes`)
  t.equal(cache.counts.stored, 40)
  t.equal(await cacheStatus(gw, '/shop/39'), 'fastify-upstream; hit', 'the newest is held')
  t.equal(await cacheStatus(gw, '/shop/0'), 'fastify-upstream; fwd=miss; fwd-status=200; stored', 'the oldest went')
  const metrics = await (await gw.request('/metrics')).body.text()
  t.match(metrics, /fastify_upstream_cache_bytes\{route="\/shop"\} \d+/)
  t.match(metrics, /fastify_upstream_cache_requests_total\{route="\/shop",result="hit"\} 1/)
  t.match(metrics, /fastify_upstream_cache_requests_total\{route="\/shop",result="miss"\} 41/)
  t.match(metrics, /# TYPE fastify_upstream_cache_stored_total counter\nfastify_upstream_cache_stored_total\{route="\/shop"\} 41/)
  t.match(metrics, /# TYPE fastify_upstream_cache_bytes gauge/)
})

t.test('two gateways share one Redis store: what one stored, the other serves', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const u = await cacheable(t)
  const a = await gateway(t, u, { store: redis.url })
  const b = await gateway(t, u, { store: redis.url })
  t.equal(await cacheStatus(a, '/shop/item'), 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  t.equal(await cacheStatus(b, '/shop/item'), 'fastify-upstream; hit')
  const res = await b.request('/shop/item', { headers: HOST })
  t.equal((await res.body.text()).trim(), '/item')
  t.equal(u.hits, 1, 'one upstream request for both gateways')
  t.equal(await b.app.upstream.purge('/shop', '/shop/item'), 1)
  t.equal(await cacheStatus(a, '/shop/item'), 'fastify-upstream; fwd=miss; fwd-status=200; stored', 'purged for every instance')
  const client = new Redis(redis.url)
  t.teardown(() => client.disconnect())
  const keys = await client.keys('fastify-upstream:{cache}:*')
  t.equal(keys.length, 1)
  t.ok(await client.pttl(keys[0]!) > 0, 'every key expires')
})

t.test('Redis stopped mid-test: lookups are misses, the outage is logged once and counted, and sharing resumes', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const u = await cacheable(t)
  const gw = await gateway(t, u, { store: redis.url })
  t.equal(await cacheStatus(gw, '/shop/item'), 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  t.equal(await cacheStatus(gw, '/shop/item'), 'fastify-upstream; hit')
  await redis.stop()
  for (let i = 0; i < 5; i++) {
    const res = await gw.request('/shop/item', { headers: HOST })
    t.equal(res.statusCode, 200, 'the client is served')
    t.equal((await res.body.text()).trim(), '/item')
    t.equal(res.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; detail=store-unavailable')
  }
  const outage = gw.logs.filter((r) => r.cacheStore === 'unreachable')
  t.equal(outage.length, 1, 'logged once per outage')
  t.equal(outage[0]!.level, 40)
  const cache = (await report(gw)).caches![0]!
  t.ok(cache.counts.storeErrors >= 5, 'counted')
  t.equal(cache.storeHealth?.state, 'unreachable')
  t.equal(gw.logs.filter((r) => r.level >= 50).length, 0, 'no error record')
  await redis.start()
  await waitFor(() => gw.logs.some((r) => r.cacheStore === 'ok'), 10_000, 'the store to answer again')
  t.equal(await cacheStatus(gw, '/shop/item'), 'fastify-upstream; fwd=miss; fwd-status=200; stored', 'a fresh Redis is empty')
  t.equal(await cacheStatus(gw, '/shop/item'), 'fastify-upstream; hit')
})

t.test('a stalled Redis costs a lookup at most its timeout, then the request goes upstream', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const u = await cacheable(t)
  const gw = await gateway(t, u, { store: redis.url })
  await cacheStatus(gw, '/shop/item')
  redis.stall()
  t.teardown(redis.resume)
  const res = await gw.request('/shop/item', { headers: HOST })
  t.equal(res.statusCode, 200)
  await res.body.dump()
  t.equal(res.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; detail=store-unavailable')
  redis.resume()
})
