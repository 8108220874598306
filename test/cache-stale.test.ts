// The last good answer instead of an error: a stored answer within its stale-if-error window
// (the response's own, or the route's staleIfError) stands in for every failure the gateway
// would answer with a 5xx, and for an upstream 5xx; stale-while-revalidate answers at once and
// refreshes in the background, once per key.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { startGateway, waitFor, type Gateway, type LogRecord } from './helpers/gateway.js'
import { startUpstream, type Running } from './helpers/servers.js'
import { ourProxyStatus } from './helpers/proxy-status.js'
import type { UpstreamOptions } from '../lib/options/types.js'
import type { StatusReport } from '../lib/observe/report.js'

type Answer = (req: http.IncomingMessage, res: http.ServerResponse) => void

async function upstream (t: Test, answer: Answer): Promise<Running & { set: (next: Answer) => void }> {
  let current = answer
  const u = await startUpstream('u', (req, res) => { current(req, res) })
  t.teardown(u.close)
  return Object.assign(u, { set: (next: Answer) => { current = next } })
}

let version = 0
function good (cacheControl: string): Answer {
  return (_req, res) => {
    version++
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cacheControl })
    res.end(`good ${version}`)
  }
}

const failing503: Answer = (_req, res) => {
  res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5' })
  res.end('down for maintenance')
}

async function get (gw: Gateway, path: string): Promise<{ status: number, headers: Record<string, unknown>, body: string }> {
  const res = await gw.request(path, { headers: { accept: 'application/json' } })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
const staleRecords = (gw: Gateway): LogRecord[] => gw.logs.filter((r) => r.servedStale === true)
const errorRecords = (gw: Gateway): LogRecord[] => gw.logs.filter((r) => r.level >= 50)

/** A gateway in front of `u` whose answer at /shop/item is stored and then stale. */
async function staleEntry (t: Test, u: Running, cache: UpstreamOptions['routes'][number]['cache'], pool: Partial<UpstreamOptions['pools'][string]> = {}): Promise<{ gw: Gateway, body: string }> {
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url], retry: { retries: 0 }, timeouts: { headers: 300 }, ...pool } },
    routes: [{ prefix: '/shop', pool: 'shop', cache }],
    status: { path: '/_upstream' }
  })
  const first = await get(gw, '/shop/item')
  t.equal(first.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; stored')
  // max-age=1: stale after a second.
  await sleep(1100)
  return { gw, body: first.body }
}

function assertServedStale (t: Test, gw: Gateway, answer: { status: number, headers: Record<string, unknown>, body: string }, body: string, error: string): void {
  t.equal(answer.status, 200, 'the stored status')
  t.equal(answer.body, body, 'the stored body')
  t.equal(answer.headers['cache-status'], 'fastify-upstream; hit; detail=stale-if-error')
  t.ok(Number(answer.headers.age) >= 1, 'Age says how old it is')
  const member = ourProxyStatus(answer.headers['proxy-status'])
  if (error === 'upstream_error_status') t.equal(member.params['received-status'], 503)
  else t.equal(member.params.error, error, 'Proxy-Status names the failure')
  const records = staleRecords(gw)
  t.equal(records.length, 1, 'one record')
  t.equal(records[0]!.level, 40, 'at warn')
  t.equal(records[0]!.error, error)
  t.match(records[0]!.msg, /served a stale answer from the cache instead \(stale-if-error\)/)
  t.equal(errorRecords(gw).length, 0, 'no error record')
}

t.test('stale-if-error: a refused connection is answered with the stored answer', async (t) => {
  const u = await upstream(t, good('max-age=1, stale-if-error=60'))
  const { gw, body } = await staleEntry(t, u, true)
  await u.close()
  const answer = await get(gw, '/shop/item')
  assertServedStale(t, gw, answer, body, 'connection_refused')
  const report = (await (await gw.request('/_upstream', { headers: { accept: 'application/json' } })).body.json()) as StatusReport
  t.equal(report.caches?.[0]?.counts.staleIfError, 1, 'counted on the status report')
  const story = (await (await gw.request(`/_upstream/requests/${String(staleRecords(gw)[0]!.reqId)}`, { headers: { accept: 'application/json' } })).body.json()) as { cache?: string }
  t.equal(story.cache, 'fastify-upstream; hit; detail=stale-if-error', 'the story says the answer came from the cache')
  const storyPage = await (await gw.request(`/_upstream/requests/${String(staleRecords(gw)[0]!.reqId)}`, { headers: { accept: 'text/html' } })).body.text()
  t.match(storyPage, /Answered from the cache instead \(<code>fastify-upstream; hit; detail=stale-if-error<\/code>\)/)
})

t.test('stale-if-error: a headers timeout is answered with the stored answer', async (t) => {
  const u = await upstream(t, good('max-age=1, stale-if-error=60'))
  const { gw, body } = await staleEntry(t, u, true)
  u.set(() => {})
  assertServedStale(t, gw, await get(gw, '/shop/item'), body, 'http_response_timeout')
})

t.test('stale-if-error: every target out of rotation (ejected) is answered with the stored answer', async (t) => {
  const u = await upstream(t, good('max-age=1'))
  const { gw, body } = await staleEntry(t, u, { staleIfError: 60_000 }, { outlier: { consecutiveFailures: 1, ejectFor: 60_000 } })
  u.set(failing503)
  // The 503 ejects the only target, and is itself answered stale.
  assertServedStale(t, gw, await get(gw, '/shop/item'), body, 'upstream_error_status')
  await waitFor(() => gw.app.upstream.pool('shop').targets()[0]!.state === 'ejected', 5000, 'the ejection')
  const hits = u.hits
  const answer = await get(gw, '/shop/item')
  t.equal(u.hits, hits, 'decided without a request upstream')
  t.equal(answer.status, 200)
  t.equal(answer.headers['cache-status'], 'fastify-upstream; hit; detail=stale-if-error')
  t.equal(ourProxyStatus(answer.headers['proxy-status']).params.error, 'destination_unavailable')
  t.equal(staleRecords(gw).length, 2)
  t.equal(staleRecords(gw)[1]!.error, 'destination_unavailable')
})

t.test('stale-if-error: an upstream 503 is answered with the stored answer (route staleIfError)', async (t) => {
  const u = await upstream(t, good('max-age=1'))
  const { gw, body } = await staleEntry(t, u, { staleIfError: 60_000 })
  u.set(failing503)
  assertServedStale(t, gw, await get(gw, '/shop/item'), body, 'upstream_error_status')
})

t.test('past its stale-if-error window, or without one, the failure is answered as usual', async (t) => {
  const u = await upstream(t, good('max-age=1'))
  const { gw } = await staleEntry(t, u, true)
  u.set(failing503)
  const answer = await get(gw, '/shop/item')
  t.equal(answer.status, 503, 'no window: the upstream 503 goes on')
  t.equal(answer.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=503', 'an answer without a validator is not kept past its windows')
  const u2 = await upstream(t, good('max-age=1, stale-if-error=1'))
  const { gw: gw2 } = await staleEntry(t, u2, true)
  await sleep(1100)
  await u2.close()
  const late = await get(gw2, '/shop/item')
  t.equal(late.status, 502, 'the window has passed')
  t.equal(late.headers['cache-status'], 'fastify-upstream; fwd=miss', 'on the gateway\'s own error answer too')
  t.equal(staleRecords(gw2).length, 0)
})

t.test('must-revalidate forbids a stale answer even within the route\'s staleIfError', async (t) => {
  const u = await upstream(t, good('max-age=1, must-revalidate'))
  const { gw } = await staleEntry(t, u, { staleIfError: 60_000 })
  await u.close()
  t.equal((await get(gw, '/shop/item')).status, 502)
})

t.test('stale-while-revalidate answers at once and refreshes in the background, once per key', async (t) => {
  let release: () => void = () => {}
  const u = await upstream(t, good('max-age=1, stale-while-revalidate=60'))
  const { gw, body } = await staleEntry(t, u, true)
  const before = u.hits
  // The refresh is held until the stale answers are all in.
  u.set((req, res) => { release = () => { good('max-age=60')(req, res) } })
  const answers = await Promise.all(Array.from({ length: 10 }, async () => await get(gw, '/shop/item')))
  for (const answer of answers) {
    t.equal(answer.body, body)
    t.equal(answer.headers['cache-status'], 'fastify-upstream; hit; detail=stale-while-revalidate')
  }
  await waitFor(() => u.hits === before + 1, 5000, 'the refresh')
  release()
  let fresh = await get(gw, '/shop/item')
  for (let i = 0; i < 100 && fresh.headers['cache-status'] !== 'fastify-upstream; hit'; i++) {
    await sleep(20)
    fresh = await get(gw, '/shop/item')
  }
  t.equal(fresh.headers['cache-status'], 'fastify-upstream; hit')
  t.not(fresh.body, body, 'the refreshed answer')
  t.equal(u.hits, before + 1, 'one refresh for ten stale answers')
})

t.test('the route\'s staleWhileRevalidate covers answers that give no window of their own', async (t) => {
  const u = await upstream(t, good('max-age=1'))
  const { gw, body } = await staleEntry(t, u, { staleWhileRevalidate: 60_000 })
  const answer = await get(gw, '/shop/item')
  t.equal(answer.body, body)
  t.equal(answer.headers['cache-status'], 'fastify-upstream; hit; detail=stale-while-revalidate')
  await waitFor(() => u.hits === 2, 5000, 'the refresh')
})

t.test('stale-if-error: a pool at its limits (decided in the queue, nothing sent) is answered with the stored answer', async (t) => {
  const u = await upstream(t, good('max-age=1, stale-if-error=60'))
  const { gw, body } = await staleEntry(t, u, true, { limits: { maxConcurrent: 1, maxPending: 0 } })
  // One request holds the only slot: the next is refused by the limits.
  let release: () => void = () => {}
  u.set((req, res) => { release = () => { good('max-age=1')(req, res) } })
  const holding = gw.request('/shop/other')
  await waitFor(() => u.hits === 2, 5000, 'the request holding the slot')
  assertServedStale(t, gw, await get(gw, '/shop/item'), body, 'connection_limit_reached')
  release()
  await (await holding).body.dump()
  const page = await (await gw.request('/_upstream', { headers: { accept: 'text/html' } })).body.text()
  t.match(page, /<h2>Caches<\/h2>/, 'the status page has the caches')
  t.match(page, /<code>\/shop<\/code><\/td><td>0<\/td><td>\d+<\/td><td>1<\/td>/, 'with the stale answer counted')
})
