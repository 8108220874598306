// lib/routing without a socket: match rules, split buckets and their cookie, sticky ids.
import t from 'tap'
import type { FastifyRequest } from 'fastify'
import { matchPool } from '../../lib/routing/match.js'
import { BucketDealer, BUCKETS, decodeBucket, encodeBucket, poolForBucket } from '../../lib/routing/split.js'
import { Affinity } from '../../lib/routing/sticky.js'
import { validateOptions } from '../../lib/options/validate.js'
import type { Target } from '../../lib/pool/target.js'

const request = (headers: Record<string, string>, query: Record<string, string | string[]> = {}, protocol = 'http'): FastifyRequest =>
  ({ headers, query, protocol }) as unknown as FastifyRequest

const routeOf = (route: Record<string, unknown>): ReturnType<typeof validateOptions>['routes'][number] => validateOptions({
  pools: { stable: { targets: ['http://127.0.0.1:1'] }, canary: { targets: ['http://127.0.0.1:2'] }, beta: { targets: ['http://127.0.0.1:3'] } },
  routes: [{ prefix: '/api', pool: 'stable', ...route }]
}).routes[0]!

t.test('match: the first rule whose every condition fits wins; strings are exact, RegExps test', async (t) => {
  const { match } = routeOf({
    match: [
      { header: { 'X-Canary': '1' }, cookie: { tester: /^(ada|grace)$/ }, pool: 'beta' },
      { header: { 'x-canary': '1' }, pool: 'canary' },
      { query: { version: /^2\./ }, pool: 'canary' },
      { cookie: { plan: 'beta' }, pool: 'beta' }
    ]
  })
  t.equal(matchPool(match, request({ 'x-canary': '1', cookie: 'tester=ada; other=x' })), 'beta', 'header and cookie both fit the first rule')
  t.equal(matchPool(match, request({ 'x-canary': '1', cookie: 'tester=bob' })), 'canary', 'the first rule\'s cookie does not fit: the next rule')
  t.equal(matchPool(match, request({ 'x-canary': '10' })), null, 'a string must be equal, not contained')
  t.equal(matchPool(match, request({}, { version: '2.1' })), 'canary')
  t.equal(matchPool(match, request({}, { version: ['1.0', '2.0'] })), 'canary', 'a repeated parameter fits when one value does')
  t.equal(matchPool(match, request({ cookie: 'plan=beta' })), 'beta')
  t.equal(matchPool(match, request({ cookie: 'plan=betamax' })), null)
  t.equal(matchPool(match, request({})), null)
})

t.test('match and split are checked at registration, naming the option', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ match: [{ header: { a: '1' }, pool: 'stable' }, { header: { b: '1' }, pool: 'nope' }] }, /^routes\[0\]\.match\[1\]\.pool: no pool named "nope" \(pools: stable, canary, beta\)$/],
    [{ match: [{ pool: 'canary' }] }, /^routes\[0\]\.match\[0\]: expected at least one condition in header, cookie or query/],
    [{ match: [{ header: { a: 1 }, pool: 'canary' }] }, /^routes\[0\]\.match\[0\]\.header\.a: expected a string or a RegExp, got 1$/],
    [{ match: [{ query: { a: /x/g }, pool: 'canary' }] }, /^routes\[0\]\.match\[0\]\.query\.a: expected a RegExp without the g or y flag/],
    [{ match: [{ headers: { a: '1' }, pool: 'canary' }] }, /^routes\[0\]\.match\[0\]\.headers: unknown option \(did you mean "header"\?\)$/],
    [{ split: { canary: 101 } }, /^routes\[0\]\.split\.canary: expected a percentage from 0 to 100/],
    [{ split: { canary: 60, beta: 50 } }, /^routes\[0\]\.split\.beta: expected shares that add up to 100 or less/],
    [{ split: { nope: 5 } }, /^routes\[0\]\.split\.nope: no pool named "nope"/],
    [{ split: { canary: 0.001 } }, /^routes\[0\]\.split\.canary: expected a percentage from 0 to 100 \(to a hundredth\)/],
    [{ mirror: { pool: 'nope' } }, /^routes\[0\]\.mirror\.pool: no pool named "nope"/],
    [{ mirror: { pool: 'canary', percent: -1 } }, /^routes\[0\]\.mirror\.percent: expected a percentage from 0 to 100/],
    [{ mirror: { pool: 'canary', maxInFlight: 0 } }, /^routes\[0\]\.mirror\.maxInFlight: expected an integer >= 1/]
  ]
  for (const [route, message] of cases) t.throws(() => routeOf(route), { message })
  t.throws(() => validateOptions({ pools: { p: { targets: ['http://127.0.0.1:1'], sticky: { cookie: 'a b' } } }, routes: [{ prefix: '/', pool: 'p' }] }), { message: /^pools\.p\.sticky\.cookie: expected a cookie name/ })
  t.throws(() => validateOptions({ pools: { p: { targets: ['http://127.0.0.1:1'], sticky: { ttl: 10 } } }, routes: [{ prefix: '/', pool: 'p' }] }), { message: /^pools\.p\.sticky\.ttl: expected a duration in milliseconds >= 1000/ })
  const route = routeOf({ split: { canary: 5, beta: 2.5 }, mirror: { pool: 'beta' }, timeouts: { headers: 100 } })
  t.same(route.split, [{ pool: 'canary', upTo: 500 }, { pool: 'beta', upTo: 750 }])
  t.same(route.mirror, { pool: 'beta', percent: 100, maxInFlight: 100, bodyLimit: 1048576 })
  t.same([...route.variants.keys()], ['canary', 'beta'], 'each other pool the route may choose has its variant')
  t.equal(route.variants.get('canary')!.timeouts.headers, 100, 'with the route\'s overrides')
})

t.test('split: a run of new clients covers the buckets evenly, so shares hold within a point', async (t) => {
  const shares = [{ pool: 'canary', upTo: 500 }, { pool: 'beta', upTo: 3500 }]
  for (const start of [0, 0.25, 0.5, 0.999]) {
    const dealer = new BucketDealer(start)
    const counts: Record<string, number> = { canary: 0, beta: 0, stable: 0 }
    for (let i = 0; i < 1000; i++) counts[poolForBucket(shares, dealer.deal(), 'stable')]!++
    t.ok(Math.abs(counts.canary! / 10 - 5) <= 1, `canary ${counts.canary! / 10}% of 1000 (start ${start})`)
    t.ok(Math.abs(counts.beta! / 10 - 30) <= 1, `beta ${counts.beta! / 10}%`)
    t.ok(Math.abs(counts.stable! / 10 - 65) <= 1, `stable ${counts.stable! / 10}%`)
  }
})

t.test('split cookie: a bucket round-trips; anything else is not a bucket', async (t) => {
  for (const bucket of [0, 1, 499, BUCKETS - 1]) t.equal(decodeBucket(encodeBucket(bucket)), bucket)
  t.notMatch(encodeBucket(499), /canary|stable|499/, 'the value names no pool')
  for (const value of [undefined, '', 'b', 'bzzzz', 'b7pt', 'x12', 'b-1', 'canary']) t.equal(decodeBucket(value), null, String(value))
})

t.test('sticky: the client\'s target goes first while it is a candidate; the cookie names it opaquely', async (t) => {
  const config = validateOptions({ pools: { p: { targets: ['http://10.0.0.7:3001', 'http://10.0.0.8:3001'], sticky: { ttl: 3_600_000 } } }, routes: [{ prefix: '/', pool: 'p' }] })
  const pool = config.pools.get('p')!
  const affinity = new Affinity(pool, pool.sticky!, 'edge')
  const a = { origin: 'http://10.0.0.7:3001' } as Target
  const b = { origin: 'http://10.0.0.8:3001' } as Target
  const idA = affinity.idOf(a)
  t.match(idA, /^[A-Za-z0-9_-]{16}$/)
  t.not(idA, affinity.idOf(b))
  t.equal(new Affinity(pool, pool.sticky!, 'edge').idOf({ origin: a.origin } as Target), idA, 'another instance with the same configuration gives the same id')
  t.not(new Affinity(pool, pool.sticky!, 'other').idOf(a), idA, 'another gateway name gives another')
  t.same(affinity.first([a, b], request({ cookie: `upstream=${affinity.idOf(b)}` })), [b, a])
  t.same(affinity.first([a], request({ cookie: `upstream=${affinity.idOf(b)}` })), [a], 'out of rotation: the balancer\'s choice')
  t.same(affinity.first([a, b], request({ cookie: 'upstream=forged' })), [a, b])
  t.equal(affinity.cookieFor(b, request({ cookie: `upstream=${affinity.idOf(b)}` })), null, 'the cookie already names the target')
  const set = affinity.cookieFor(a, request({ cookie: `upstream=${affinity.idOf(b)}` }, {}, 'https'))!
  t.equal(set, `upstream=${idA}; Max-Age=3600; Path=/; HttpOnly; Secure; SameSite=Lax`)
  t.notMatch(set, /10\.0\.0|3001/, 'never an address')
  t.notMatch(affinity.cookieFor(a, request({}))!, /Secure/, 'Secure only over TLS')
})
