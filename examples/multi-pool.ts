// Two pools, two routes, two balancers.
//
//   npm run build && node --import tsx examples/multi-pool.ts
//
// - /users/*  → pool "users": weighted round-robin, users-a takes 2 requests of every 3.
//   The prefix is stripped: GET /users/42 reaches a target as GET /42.
// - /orders/* → pool "orders": least-request, and `rewritePrefix` keeps the path whole:
//   GET /orders/7 reaches a target as GET /orders/7.
// - /pools    → an ordinary Fastify route reading `app.upstream` (targets and counters).
import Fastify from 'fastify'
import upstream from 'fastify-upstream'
import { startUpstream } from './lib/upstream.js'
import { serve } from './lib/gateway.js'

const usersA = await startUpstream('users-a')
const usersB = await startUpstream('users-b')
const ordersA = await startUpstream('orders-a')
const ordersB = await startUpstream('orders-b')

const app = Fastify({ logger: true })
await app.register(upstream, {
  pools: {
    users: {
      targets: [{ url: usersA.url, weight: 2 }, { url: usersB.url, weight: 1 }]
    },
    orders: {
      targets: [ordersA.url, ordersB.url],
      balancer: 'least-request'
    }
  },
  routes: [
    { prefix: '/users', pool: 'users' },
    { prefix: '/orders', pool: 'orders', rewritePrefix: '/orders', methods: ['GET', 'POST'] }
  ]
})

app.get('/pools', async () => app.upstream.pools())

await serve(app, {
  upstreams: [usersA, usersB, ordersA, ordersB],
  banner: [
    'fastify-upstream multi-pool example',
    `  pool users  (round-robin 2:1): ${usersA.url} (${usersA.name}, weight 2), ${usersB.url} (${usersB.name}, weight 1)`,
    `  pool orders (least-request):   ${ordersA.url} (${ordersA.name}), ${ordersB.url} (${ordersB.name})`
  ],
  tries: [
    ['for i in 1 2 3 4 5 6; do curl -s $GW/users/42; done', 'users-a answers twice as often as users-b'],
    ['curl -s $GW/orders/7', 'rewritePrefix: the target sees /orders/7'],
    ['curl -s -X POST -H \'content-type: application/json\' -d \'{"item":1}\' $GW/orders', 'POST is allowed on /orders (methods)'],
    ['curl -s $GW/pools', 'app.upstream.pools(): targets and their counters']
  ]
})
