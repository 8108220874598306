// routes[].onRequest, preHandler, preValidation, config and constraints: handed to the route's
// two Fastify routes as they are, so a hook guards one route and nothing else (the status page
// and the metrics stay outside it).
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import { validateOptions } from '../lib/options/validate.js'

function requireKey (request: FastifyRequest, reply: FastifyReply, done: () => void): void {
  if (request.headers['x-api-key'] === 'k') {
    done()
    return
  }
  reply.code(401).send({ message: 'key needed' })
}

t.test('an onRequest hook on one route guards both its paths and nothing else', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.url] } },
    routes: [{ prefix: '/private', pool: 'p', onRequest: requireKey }, { prefix: '/public', pool: 'p' }]
  })
  for (const path of ['/private', '/private/users/7']) {
    const refused = await gw.request(path)
    t.equal(refused.statusCode, 401, `${path} without the key`)
    t.same(await refused.body.json(), { message: 'key needed' })
    const allowed = await gw.request(path, { headers: { 'x-api-key': 'k' } })
    t.equal(allowed.statusCode, 200, `${path} with the key`)
    await allowed.body.dump()
  }
  for (const path of ['/public/x', '/_upstream', '/metrics']) {
    const res = await gw.request(path, { headers: { accept: 'application/json' } })
    t.equal(res.statusCode, 200, `${path} is outside the hook`)
    await res.body.dump()
  }
  t.equal(u.hits, 3, 'refused requests never reached the upstream')
})

t.test('preValidation and preHandler run in order, read the route\'s config, and can change the request', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const order: string[] = []
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.url] } },
    routes: [{
      prefix: '/p',
      pool: 'p',
      config: { tenant: 'acme' },
      preValidation: [function first (_request, _reply, done) { order.push('preValidation'); done() }],
      preHandler: async (request) => {
        const config = request.routeOptions.config as unknown as { tenant: string, upstream: { pool: string } }
        order.push(`preHandler ${config.tenant} ${config.upstream.pool}`)
        request.headers['x-tenant'] = config.tenant
      }
    }]
  })
  const res = await gw.request('/p/x')
  t.equal(res.statusCode, 200)
  const echo = await res.body.json() as { headers: Record<string, string> }
  t.equal(echo.headers['x-tenant'], 'acme', 'a header set by a hook goes upstream')
  t.same(order, ['preValidation', 'preHandler acme p'], 'the app\'s config sits beside the gateway\'s')
})

t.test('a hook that throws gets its own status in the gateway\'s format; nothing goes upstream', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.url] } },
    routes: [{
      prefix: '/p',
      pool: 'p',
      preHandler: async () => { throw Object.assign(new Error('tenant suspended'), { statusCode: 403 }) }
    }]
  })
  const res = await gw.request('/p/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 403)
  t.match(await res.body.json(), { status: 403 })
  t.equal(u.hits, 0)
})

t.test('constraints: a route served only for one Host', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.url] } },
    routes: [{ prefix: '/p', pool: 'p', constraints: { host: 'api.example' } }]
  })
  const other = await gw.request('/p/x', { headers: { accept: 'application/json' } })
  t.equal(other.statusCode, 404, 'another Host finds no route')
  t.match(await other.body.json(), { error: 'http_request_error', status: 404 })
  for (const path of ['/p', '/p/x']) {
    const res = await gw.request(path, { headers: { host: 'api.example' } })
    t.equal(res.statusCode, 200, `${path} for api.example`)
    await res.body.dump()
  }
  t.equal(u.hits, 2)
})

t.test('a route\'s onRequest hook guards its WebSocket handshakes too', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [u.url] } },
    routes: [{ prefix: '/ws', pool: 'p', websocket: true, onRequest: requireKey }]
  })
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`)
  // Ending a handshake that was refused is an error to ws; it is the expected end here.
  ws.on('error', () => {})
  t.teardown(() => ws.terminate())
  const [, response] = await once(ws, 'unexpected-response') as [unknown, { statusCode: number }]
  t.equal(response.statusCode, 401)
  t.equal(u.hits, 0)
})

t.test('route hooks, config and constraints are checked at registration, naming the option', async (t) => {
  const base = { pools: { p: { targets: ['http://127.0.0.1:1'] } } }
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ onRequest: 'auth' }, /^routes\[0\]\.onRequest: expected a hook function or an array of them, got "auth"$/],
    [{ preHandler: [() => {}, 42] }, /^routes\[0\]\.preHandler\[1\]: expected a hook function, got 42$/],
    [{ preValidation: {} }, /^routes\[0\]\.preValidation: expected a hook function or an array of them/],
    [{ config: [] }, /^routes\[0\]\.config: expected an object, got an array$/],
    [{ config: { upstream: 1 } }, /^routes\[0\]\.config\.upstream: reserved/],
    [{ config: { rateLimit: { max: 1 } } }, /^routes\[0\]\.config\.rateLimit: set routes\[0\]\.rateLimit instead/],
    [{ constraints: 'api.example' }, /^routes\[0\]\.constraints: expected an object/],
    [{ rewriteRequestHeaders: {} }, /^routes\[0\]\.rewriteRequestHeaders: expected a function \(request, headers\) => headers, got an object$/],
    [{ rewriteResponseHeaders: 'x' }, /^routes\[0\]\.rewriteResponseHeaders: expected a function \(headers, request, status\) => headers/]
  ]
  for (const [route, message] of cases) {
    t.throws(() => validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p', ...route }] }), { message })
  }
  const config = validateOptions({ ...base, routes: [{ prefix: '/p', pool: 'p', onRequest: [requireKey], config: { a: 1 } }] })
  t.same(Object.keys(config.routes[0]!.fastify), ['onRequest', 'config'], 'only the options given are handed over')
})
