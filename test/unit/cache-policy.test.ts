// The cache's small decisions, without a socket: the key and what purge() narrows it to, which
// variant an answer is, and the stale windows read beside http-cache-semantics' verdicts.
import t from 'tap'
import { cacheKey, purgePrefix, variantOf } from '../../lib/cache/key.js'
import { keepFor, KEPT_FOR_REVALIDATION, policyOf, requestRefusesStored, shouldStore, staleIfErrorSeconds, staleWhileRevalidateSeconds, usableOnError } from '../../lib/cache/policy.js'

const request = { method: 'GET', url: '/p/x', headers: { host: 'gw.example' } }
const none = { staleIfError: 0, staleWhileRevalidate: 0 }

t.test('the key starts with what purge narrows: route, path, query', async (t) => {
  const key = cacheKey('/p', '/p/x?a=1', 'pool', 'GW.example', 'GET')
  t.ok(key.startsWith(purgePrefix('/p')))
  t.ok(key.startsWith(purgePrefix('/p', '/p/x')))
  t.ok(key.startsWith(purgePrefix('/p', '/p/x?a=1')))
  t.notOk(key.startsWith(purgePrefix('/p', '/p/x?a=2')))
  t.notOk(cacheKey('/p', '/p/xy', 'pool', 'h', 'GET').startsWith(purgePrefix('/p', '/p/x')), 'a path is not a prefix of a longer one')
  t.notOk(cacheKey('/pp', '/pp/x', 'pool', 'h', 'GET').startsWith(purgePrefix('/p')), 'nor a route of another')
  t.not(cacheKey('/p', '/p/x', 'a', 'h', 'GET'), cacheKey('/p', '/p/x', 'b', 'h', 'GET'), 'the pool is in the key')
  t.not(cacheKey('/p', '/p/x', 'a', 'h', 'GET'), cacheKey('/p', '/p/x', 'a', 'h', 'HEAD'), 'and the method')
  t.equal(cacheKey('/p', '/p/x', 'a', 'H.example', 'GET'), cacheKey('/p', '/p/x', 'a', 'h.example', 'GET'), 'a host in any case')
})

t.test('a variant is the values of the fields Vary names, in any order and case', async (t) => {
  t.equal(variantOf(undefined, { 'accept-language': 'fr' }), '')
  t.equal(variantOf('Accept-Language, Accept-Encoding', { 'accept-language': 'fr', 'accept-encoding': 'gzip' }),
    variantOf('accept-encoding,accept-language', { 'accept-encoding': 'gzip', 'accept-language': 'fr' }))
  t.not(variantOf('accept-language', { 'accept-language': 'fr' }), variantOf('accept-language', { 'accept-language': 'en' }))
  t.equal(variantOf('accept-language', { 'accept-language': 'fr,  en' }), variantOf('accept-language', { 'accept-language': 'fr, en' }), 'whitespace folded')
})

t.test('the stale windows: the longer of the answer\'s and the route\'s, none where the answer forbids stale use', async (t) => {
  const own = policyOf(request, 200, { 'cache-control': 'max-age=10, stale-if-error=300, stale-while-revalidate=30' })
  t.equal(staleIfErrorSeconds(own, none), 300)
  t.equal(staleIfErrorSeconds(own, { staleIfError: 600_000, staleWhileRevalidate: 0 }), 600)
  t.equal(staleWhileRevalidateSeconds(own, none), 30)
  t.ok(usableOnError(own, none))
  for (const forbids of ['max-age=10, must-revalidate', 'max-age=10, proxy-revalidate', 'no-cache, max-age=10']) {
    t.equal(staleIfErrorSeconds(policyOf(request, 200, { 'cache-control': forbids }), { staleIfError: 600_000, staleWhileRevalidate: 600_000 }), 0, forbids)
  }
})

t.test('what is stored and for how long', async (t) => {
  t.ok(shouldStore(policyOf(request, 200, { 'cache-control': 'max-age=10' })))
  t.notOk(shouldStore(policyOf(request, 200, { 'cache-control': 'private, max-age=10' })))
  t.notOk(shouldStore(policyOf(request, 200, {})), 'no freshness, no storing')
  t.notOk(shouldStore(policyOf({ ...request, headers: { ...request.headers, authorization: 'Bearer x' } }, 200, { 'cache-control': 'max-age=10' })))
  const plain = keepFor(policyOf(request, 200, { 'cache-control': 'max-age=10' }), none)
  t.ok(plain > 9_000 && plain <= 10_000, `kept while fresh (${plain} ms)`)
  const withWindow = keepFor(policyOf(request, 200, { 'cache-control': 'max-age=10' }), { staleIfError: 60_000, staleWhileRevalidate: 0 })
  t.ok(withWindow > 69_000 && withWindow <= 70_000, `and through the route's window (${withWindow} ms)`)
  const validated = keepFor(policyOf(request, 200, { 'cache-control': 'max-age=10', etag: '"a"' }), none)
  t.ok(validated > (10 + KEPT_FOR_REVALIDATION - 1) * 1000, `an answer with a validator is kept to be revalidated (${validated} ms)`)
})

t.test('a request that asks past the cache', async (t) => {
  t.ok(requestRefusesStored({ 'cache-control': 'no-cache' }))
  t.ok(requestRefusesStored({ 'cache-control': 'max-age=0, no-cache' }))
  t.ok(requestRefusesStored({ pragma: 'no-cache' }))
  t.notOk(requestRefusesStored({ 'cache-control': 'max-age=0', pragma: 'no-cache' }), 'Cache-Control wins over Pragma')
  t.notOk(requestRefusesStored({}))
})
