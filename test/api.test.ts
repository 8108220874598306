import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'

t.test('app.upstream lists pools and their targets with live counters', async (t) => {
  const a = await startUpstream('a')
  t.teardown(a.close)
  const gw = await startGateway(t, {
    pools: {
      users: { targets: [a.url, { url: 'http://127.0.0.1:1', weight: 2, backup: true }], balancer: 'least-request' },
      orders: { targets: ['http://127.0.0.1:1'], retry: { retries: 0 } }
    },
    routes: [{ prefix: '/users', pool: 'users' }, { prefix: '/orders', pool: 'orders' }]
  })
  await (await gw.request('/users/1')).body.dump()
  await (await gw.request('/orders/1')).body.dump()

  const pools = gw.app.upstream.pools()
  t.same(pools.map((p) => [p.name, p.balancer]), [['users', 'least-request'], ['orders', 'round-robin']])
  const [primary, backup] = gw.app.upstream.pool('users').targets()
  t.match(primary, { url: a.url, weight: 1, backup: false, inFlight: 0, requests: 1, failures: 0, lastError: null })
  t.type(primary!.latencyMs.ewma, 'number')
  t.match(backup, { url: 'http://127.0.0.1:1', weight: 2, backup: true, requests: 0 }, 'a backup takes no traffic while a primary can')
  const [dead] = gw.app.upstream.pool('orders').targets()
  t.match(dead, { requests: 1, failures: 1, lastError: { error: 'connection_refused', cause: 'ECONNREFUSED' } })
  t.throws(() => gw.app.upstream.pool('nope'), { message: 'fastify-upstream: no pool named "nope" (pools: users, orders)' })
})
