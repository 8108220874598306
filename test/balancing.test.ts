import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { startUpstream, type Running } from './helpers/servers.js'
import { RoundRobin } from '../lib/pool/balancer/round-robin.js'
import { WeightedRandom } from '../lib/pool/balancer/random.js'
import { LeastRequest } from '../lib/pool/balancer/least-request.js'
import { ConsistentHash, LOAD_FACTOR } from '../lib/pool/balancer/hash.js'
import { Target } from '../lib/pool/target.js'
import { validateOptions } from '../lib/options/validate.js'

function targets (...weights: number[]): Target[] {
  const config = validateOptions({
    pools: { p: { targets: weights.map((weight, i) => ({ url: `http://127.0.0.1:${3000 + i}`, weight })) } },
    routes: [{ prefix: '/', pool: 'p' }]
  }).pools.get('p')!
  return config.targets.map((target) => new Target(target, config))
}

async function upstreams (t: { teardown: (fn: () => unknown) => void }, count: number): Promise<Running[]> {
  const list = await Promise.all(Array.from({ length: count }, async (_, i) => await startUpstream(`u${i}`)))
  t.teardown(async () => { for (const u of list) await u.close() })
  return list
}

t.test('smooth weighted round-robin interleaves instead of bursting (nginx order for 5:1:1)', async (t) => {
  const [a, b, c] = targets(5, 1, 1)
  const rr = new RoundRobin()
  const picks = Array.from({ length: 7 }, () => rr.order([a!, b!, c!])[0])
  t.same(picks.map((p) => p === a ? 'a' : p === b ? 'b' : 'c').join(''), 'aabacaa')
})

t.test('every ordering lists each candidate once, the choice first', async (t) => {
  const list = targets(1, 2, 3)
  const ordered = new RoundRobin().order(list)
  t.equal(ordered.length, 3)
  t.equal(new Set(ordered).size, 3)
  const random = new WeightedRandom(() => 0.5).order(list)
  t.equal(new Set(random).size, 3)
  t.equal(random[0], list[2], 'with the same draw, the heaviest target goes first')
})

t.test('round-robin shares follow the weights over a few hundred requests', async (t) => {
  const [light, heavy] = await upstreams(t, 2)
  const gw = await startGateway(t, {
    pools: { p: { targets: [light!.url, { url: heavy!.url, weight: 3 }] } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  for (let i = 0; i < 400; i++) await (await gw.request('/p/x')).body.dump()
  t.equal(light!.hits + heavy!.hits, 400)
  t.equal(heavy!.hits, 300, 'smooth weighted round-robin is exact: 3 of every 4')
  t.same(gw.app.upstream.pool('p').targets().map((s) => s.requests), [100, 300])
})

t.test('random shares follow the weights within a generous tolerance', async (t) => {
  const [light, heavy] = await upstreams(t, 2)
  const gw = await startGateway(t, {
    pools: { p: { targets: [light!.url, { url: heavy!.url, weight: 3 }], balancer: 'random' } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  for (let i = 0; i < 400; i++) await (await gw.request('/p/x')).body.dump()
  t.ok(heavy!.hits > 240 && heavy!.hits < 360, `heavy took ${heavy!.hits} of 400 (expected about 300)`)
})

t.test('least-request picks the target with the fewest requests in flight (ties rotate)', async (t) => {
  const [a, b, c] = targets(1, 1, 2)
  const lr = new LeastRequest()
  a!.inFlight = 3
  b!.inFlight = 1
  c!.inFlight = 1
  t.same(lr.order([a!, b!, c!]), [c, b, a], 'load is relative to weight: c (1 of 2) before b (1 of 1)')
  a!.inFlight = b!.inFlight = c!.inFlight = 0
  const firsts = new Set(Array.from({ length: 3 }, () => lr.order([a!, b!, c!])[0]))
  t.equal(firsts.size, 3, 'idle targets take turns')
})

t.test('least-request sends traffic away from a slow target', async (t) => {
  const slow = await startUpstream('slow', (_req, res) => { setTimeout(() => res.end('slow'), 150) })
  const fast = await startUpstream('fast')
  t.teardown(async () => { await slow.close(); await fast.close() })
  const gw = await startGateway(t, {
    pools: { p: { targets: [slow.url, fast.url], balancer: 'least-request' } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  // Four clients, ten requests each: the slow target keeps requests in flight, so new ones
  // go to the fast one (round-robin would split them 20/20).
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let i = 0; i < 10; i++) await (await gw.request('/p/x')).body.dump()
  }))
  t.equal(slow.hits + fast.hits, 40)
  t.ok(fast.hits >= 32, `the fast target took ${fast.hits} of 40`)
})

t.test('p2c-ewma sends most traffic away from a target made 200 ms slower', async (t) => {
  const slow = await startUpstream('slow', (_req, res) => { setTimeout(() => res.end('slow'), 200) })
  const fast = await upstreams(t, 2)
  t.teardown(slow.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [slow.url, fast[0]!.url, fast[1]!.url], balancer: 'p2c-ewma' } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const lanes = async (n: number): Promise<void> => {
    await Promise.all(Array.from({ length: 3 }, async () => {
      for (let i = 0; i < n; i++) await (await gw.request('/p/x')).body.dump()
    }))
  }
  await lanes(10)
  const before = slow.hits
  await lanes(40)
  const share = (slow.hits - before) / 120
  t.ok(share < 0.15, `after warm-up the slow target took ${(share * 100).toFixed(1)}% of requests`)
})

t.test('hash: the same key keeps its target; requests without a key are spread round-robin', async (t) => {
  const list = await upstreams(t, 3)
  const gw = await startGateway(t, {
    pools: { p: { targets: list.map((u) => u.url), balancer: { hash: 'header:x-user' } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const targetOf = async (user?: string): Promise<string> => {
    const res = await gw.request('/p/x', user === undefined ? {} : { headers: { 'x-user': user } })
    return ((await res.body.json()) as { name: string }).name
  }
  for (const user of ['ada', 'grace', 'linus']) {
    const first = await targetOf(user)
    for (let i = 0; i < 5; i++) t.equal(await targetOf(user), first, `${user} stays on ${first}`)
  }
  const keyless = new Set([await targetOf(), await targetOf(), await targetOf()])
  t.equal(keyless.size, 3)
})

t.test('hash: removing one of 5 targets moves few keys, and no target exceeds the load bound', async (t) => {
  const five = targets(1, 1, 1, 1, 1)
  const hash = new ConsistentHash('header:x-user')
  const keys = Array.from({ length: 1000 }, (_, i) => `user-${i}`)
  const before = new Map(keys.map((k) => [k, hash.orderFor(k, five)[0]]))
  const four = five.slice(1)
  const moved = keys.filter((k) => before.get(k) !== five[0] && hash.orderFor(k, four)[0] !== before.get(k)).length
  const wereOnRemoved = keys.filter((k) => before.get(k) === five[0]).length
  t.ok(wereOnRemoved > 100 && wereOnRemoved < 320, `${wereOnRemoved} keys were on the removed target (about 1/5)`)
  t.equal(moved, 0, 'keys on the remaining targets stay where they were')
  t.ok(wereOnRemoved / 1000 <= 0.3, `${((wereOnRemoved / 1000) * 100).toFixed(1)}% of keys moved in all`)

  // Requests that never finish pile up: the bound keeps every target near the mean.
  for (let i = 0; i < 200; i++) hash.orderFor(`hot-${i % 3}`, five)[0]!.inFlight++
  const total = five.reduce((sum, x) => sum + x.inFlight, 0)
  const bound = Math.ceil((LOAD_FACTOR * total) / five.length)
  for (const x of five) t.ok(x.inFlight <= bound, `${x.url} has ${x.inFlight} in flight (bound ${bound})`)
})
