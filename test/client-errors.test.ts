// Fastify's own answers (no route, bad request, rate limited) speak the gateway's format too.
import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import type { Problem } from '../lib/errors/problem.js'

t.test('404: a path no route serves', async (t) => {
  const gw = await startGateway(t, { pools: { shop: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/shop', pool: 'shop' }] })
  const res = await gw.request('/nowhere?x=1', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 404)
  t.equal(res.headers['cache-control'], 'no-store')
  t.match(res.headers['proxy-status'], /^fastify-upstream; error=http_request_error; details="route http_request_error"$/)
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 404, title: 'Not found', error: 'http_request_error', blame: 'client', phase: 'route', temporary: false, detail: 'Nothing is served at this address.' })
  t.match(problem.hint, /No route matches GET \/nowhere: check the path against the routes\[\]\.prefix options/)
  const [record, ...others] = gw.failures()
  t.same(others, [])
  t.match(record, { level: 40, status: 404, error: 'http_request_error', blame: 'client' })
  t.same(gw.logs.filter((r) => r.level >= 40 && r.error === undefined), [], 'no second line from Fastify')
})

t.test('404: a method the route does not serve', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', methods: ['GET'] }] })
  const res = await gw.request('/shop/cart', { method: 'DELETE', headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 404)
  const problem = await res.body.json() as Problem
  t.match(problem, { error: 'http_request_error', blame: 'client', pool: 'shop', detail: 'This service does not answer DELETE requests here.' })
  t.match(problem.hint, /does not list DELETE in routes\[\]\.methods/)
  t.equal(u.hits, 0)
})

t.test('400: a path that escapes the route prefix is refused before it is proxied', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { shop: { targets: [u.url] } }, routes: [{ prefix: '/shop', pool: 'shop', rewritePrefix: '/api' }] })
  const res = await gw.request('/shop/..%2F..%2Fadmin', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 400)
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 400, title: 'Bad request', error: 'http_request_error', blame: 'client', phase: 'route' })
  t.equal(u.hits, 0, 'nothing reached the upstream')
  t.equal(gw.failures().length, 1)
  t.equal(gw.failures()[0]!.level, 40)
})

t.test('429: the global rate limit answers in the gateway format with Retry-After', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/shop', pool: 'shop' }],
    rateLimit: { max: 2, timeWindow: 60000 }
  })
  for (let i = 0; i < 2; i++) t.equal((await gw.request('/shop/x')).statusCode, 200)
  const res = await gw.request('/shop/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 429)
  t.match(res.headers['retry-after'], /^\d+$/)
  t.match(res.headers['proxy-status'], /error=http_request_denied/)
  const problem = await res.body.json() as Problem
  t.match(problem, { status: 429, error: 'http_request_denied', blame: 'client', temporary: true })
  t.equal(u.hits, 2)
  t.equal(gw.failures().length, 1)
  t.match(gw.failures()[0], { level: 40, error: 'http_request_denied' })
})

t.test('429: a per-route rate limit applies to its route only', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { shop: { targets: [u.url] } },
    routes: [{ prefix: '/limited', pool: 'shop', rateLimit: { max: 1, timeWindow: 60000 } }, { prefix: '/free', pool: 'shop' }]
  })
  t.equal((await gw.request('/limited/x')).statusCode, 200)
  t.equal((await gw.request('/limited/x')).statusCode, 429)
  for (let i = 0; i < 3; i++) t.equal((await gw.request('/free/x')).statusCode, 200)
})

t.test('the app\'s own routes keep their own error handling', async (t) => {
  const gw = await startGateway(t, { pools: { shop: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/shop', pool: 'shop' }] }, {}, (app) => {
    app.get('/own', async () => { throw Object.assign(new Error('mine'), { statusCode: 409 }) })
  })
  const res = await gw.request('/own')
  t.equal(res.statusCode, 409)
  t.match(await res.body.json(), { message: 'mine' }, 'Fastify\'s default handler, not ours')
})
