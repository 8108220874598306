// The rate limiter's own stores (lib/proxy/rate-limit-counts.ts) against @fastify/rate-limit used
// bare: the same requests must get the same answers, and in Redis the two must share their
// counts (gateways of an older release used the plugin's store: a rolling upgrade mixes both).
// When a release of the plugin changes how it counts or names its keys, this file says so.
import t, { type Test } from 'tap'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import { request } from 'undici'
import type { AddressInfo } from 'node:net'
import { MemoryCounts, RedisCounts, type ChildSettings } from '../lib/proxy/rate-limit-counts.js'
import { GuardedStore, PerGatewayRoute, StoreHealth, type Count, type LimitStore } from '../lib/proxy/rate-limit-store.js'
import { validateOptions } from '../lib/options/validate.js'
import { redisMissing, startRedis } from './helpers/redis.js'

const noRedis = redisMissing()

type Settings = ChildSettings & { continueExceeding: boolean, exponentialBackoff: boolean }
type StoreFactory = (settings: Settings) => LimitStore

/** What a client sees of one answer: the status and the limit's headers. */
interface Seen { status: number, remaining: string | undefined, reset: string | undefined }

/**
 * An app with @fastify/rate-limit, its own store unless `store` is given, a global limit on
 * `/g` and a route's own on `/r`. Listens on 127.0.0.1.
 */
async function limitedApp (t: Test, options: Record<string, unknown>, store?: StoreFactory): Promise<(path: string) => Promise<Seen>> {
  const app: FastifyInstance = Fastify()
  t.teardown(() => app.close())
  // The plugin calls `new store(settings)`: a function that returns an object stands for a class.
  const given: Record<string, unknown> = { ...options }
  if (store !== undefined) given.store = function Store (settings: Settings) { return store(settings) }
  await app.register(rateLimit, given)
  app.get('/g', async () => 'ok')
  app.get('/r', { config: { rateLimit: { max: 1, timeWindow: 30000 } } }, async () => 'ok')
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  return async (path) => {
    const res = await request(`http://127.0.0.1:${port}${path}`)
    await res.body.dump()
    const header = (name: string): string | undefined => res.headers[name] as string | undefined
    return { status: res.statusCode, remaining: header('x-ratelimit-remaining'), reset: header('x-ratelimit-reset') }
  }
}

async function sequence (send: (path: string) => Promise<Seen>, paths: string[]): Promise<Seen[]> {
  const seen: Seen[] = []
  for (const path of paths) seen.push(await send(path))
  return seen
}

const PATHS = ['/g', '/g', '/g', '/g', '/g', '/r', '/r', '/r']
const MODES: Array<[string, Record<string, unknown>]> = [
  ['a fixed window', {}],
  ['continueExceeding', { continueExceeding: true }],
  ['exponentialBackoff', { exponentialBackoff: true }]
]

t.test('in memory: the same answers as the plugin\'s own store', async (t) => {
  for (const [name, mode] of MODES) {
    const options = { max: 2, timeWindow: 60000, ...mode }
    const theirs = await sequence(await limitedApp(t, options), PATHS)
    const ours = await sequence(await limitedApp(t, options, (s) => new MemoryCounts(s.continueExceeding, s.exponentialBackoff)), PATHS)
    t.same(ours, theirs, `${name}: statuses, X-RateLimit-Remaining and -Reset`)
    t.same(ours.map((s) => s.status), [200, 200, 429, 429, 429, 200, 429, 429], `${name}: the limit holds`)
  }
})

t.test('in memory: windows end, the oldest client is forgotten past `cache`, read changes nothing', async (t) => {
  const store = new MemoryCounts(false, false, 2)
  const count = (key: string, window = 60000, max = 10): Count => {
    let got: Count | null = null
    store.incr(key, (err, result) => {
      t.equal(err, null)
      got = result
    }, window, max)
    return got!
  }
  const read = (key: string, window = 60000): Count => {
    let got: Count | null = null
    store.read(key, (_err, result) => { got = result }, window)
    return got!
  }
  t.match(count('a'), { current: 1, ttl: 60000 })
  t.match(count('a'), { current: 2 })
  t.match(read('a'), { current: 2 }, 'read tells the count')
  t.match(read('a'), { current: 2 }, 'and does not add to it')
  t.same(read('nobody'), { current: 0, ttl: 0 }, 'a client never seen has no count')
  count('b')
  count('c')
  t.match(count('a'), { current: 1 }, 'a third client pushed the oldest out (cache: 2)')

  const short = new MemoryCounts(false, false)
  const once = (): Count => {
    let got: Count | null = null
    short.incr('k', (_err, result) => { got = result }, 30, 10)
    return got!
  }
  t.match(once(), { current: 1 })
  t.match(once(), { current: 2 })
  await new Promise((resolve) => setTimeout(resolve, 40))
  t.match(once(), { current: 1, ttl: 30 }, 'a new window once the last one ended')

  const child = store.child({ continueExceeding: true, exponentialBackoff: false })
  t.ok(child instanceof MemoryCounts, 'a route has a store of its own')
})

t.test('in Redis: the same answers and keys as the plugin\'s own Redis store, and one count shared with it', { skip: noRedis ?? false }, async (t) => {
  const server = await startRedis()
  t.teardown(server.close)
  const client = new Redis(server.url, { maxRetriesPerRequest: 0 })
  t.teardown(() => client.disconnect())
  const ours = (nameSpace: string): StoreFactory => (s) => new RedisCounts(s.continueExceeding, s.exponentialBackoff, client, nameSpace)

  for (const [name, mode] of MODES) {
    const options = { max: 2, timeWindow: 60000, ...mode }
    const theirs = await sequence(await limitedApp(t, { ...options, redis: client, nameSpace: `theirs-${name}-` }), PATHS)
    const mine = await sequence(await limitedApp(t, options, ours(`ours-${name}-`)), PATHS)
    t.same(mine, theirs, `${name}: statuses, X-RateLimit-Remaining and -Reset`)
    const keys = async (prefix: string): Promise<string[]> => (await client.keys(`${prefix}*`)).map((k) => k.slice(prefix.length)).sort()
    t.same(await keys(`ours-${name}-`), await keys(`theirs-${name}-`), `${name}: the same keys`)
    t.same(await keys(`ours-${name}-`), ['127.0.0.1', 'GET/r-127.0.0.1'], `${name}: <nameSpace><client> and <nameSpace><method><url>-<client>`)
  }

  // An app on the plugin's store and one on ours, the same Redis and nameSpace: one count.
  const options = { max: 3, timeWindow: 60000 }
  const old = await limitedApp(t, { ...options, redis: client, nameSpace: 'shared-' })
  const upgraded = await limitedApp(t, options, ours('shared-'))
  const seen = [await old('/g'), await upgraded('/g'), await old('/g'), await upgraded('/g')]
  t.same(seen.map((s) => s.remaining), ['2', '1', '0', '0'], 'each counts the other\'s requests')
  t.same(seen.map((s) => s.status), [200, 200, 200, 429])
  const ttl = await client.pttl('shared-127.0.0.1')
  t.ok(ttl > 50000 && ttl <= 60000, `the key expires with the window (${ttl} ms)`)

  // createRateLimit's { increment: false } reads through the gateway's wrappers.
  const health = new StoreHealth({ warn () {}, info () {} } as unknown as FastifyBaseLogger, 'allow')
  const guarded = new GuardedStore(new PerGatewayRoute(new RedisCounts(false, false, client, 'shared-')), health)
  const read = await new Promise<Count | null>((resolve, reject) => guarded.read('127.0.0.1', (err, result) => err === null ? resolve(result) : reject(err), 60000, 3))
  t.match(read, { current: 4 }, 'read tells the shared count')
  t.equal(Number(await client.get('shared-127.0.0.1')), 4, 'and leaves it as it was')
})

t.test('in Redis: exponential backoff is capped, and Redis takes the capped expiry', { skip: noRedis ?? false }, async (t) => {
  const server = await startRedis()
  t.teardown(server.close)
  const client = new Redis(server.url, { maxRetriesPerRequest: 0 })
  t.teardown(() => client.disconnect())
  const store = new RedisCounts(false, true, client, 'backoff-')
  const incr = async (): Promise<Count> => await new Promise((resolve, reject) => store.incr('k', (err, result) => err === null ? resolve(result!) : reject(err), 60000, 1))
  let last: Count = await incr()
  for (let i = 0; i < 60; i++) last = await incr()
  t.equal(last.current, 61)
  // ioredis reads 2^53 - 1 as 2^53: its reply parser counts in floating point.
  t.ok(last.ttl >= Number.MAX_SAFE_INTEGER, `capped at 2^53 - 1 ms (${last.ttl})`)
  t.ok(await client.pttl('backoff-k') > 2 ** 52, 'and Redis took it as the key\'s expiry')
})

t.test('rateLimit.whitelist, which @fastify/rate-limit 11 ignores, is refused with its new name', async (t) => {
  const base = { pools: { p: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/p', pool: 'p' }] }
  t.throws(() => validateOptions({ ...base, rateLimit: { whitelist: ['10.0.0.1'] } } as never),
    { path: 'rateLimit.whitelist', message: /use rateLimit\.allowList/ })
  t.throws(() => validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p', rateLimit: { whitelist: ['10.0.0.1'] } }] } as never),
    { path: 'routes[0].rateLimit.whitelist', message: /use routes\[0\]\.rateLimit\.allowList/ })
})
