// A rate limit shared by every gateway instance through Redis.
//
//   redis-server --port 6379 --save '' &
//   npm run build && PORT=8080 node --import tsx examples/shared-rate-limit.ts
//   PORT=8081 node --import tsx examples/shared-rate-limit.ts      (a second instance)
//
// Each client IP may send 5 requests a minute to /api, counted across both instances. Stop
// Redis and requests pass (fail open); the log says so once, the status page shows it; start
// Redis again and the log says that too. REDIS_URL overrides redis://127.0.0.1:6379, and
// ON_STORE_ERROR=deny refuses requests while Redis is down instead.
import Fastify from 'fastify'
import upstream from 'fastify-upstream'
import { startUpstream } from './lib/upstream.js'
import { serve } from './lib/gateway.js'

const api = await startUpstream('api')

const app = Fastify({ logger: true })
await app.register(upstream, {
  pools: { api: { targets: [api.url] } },
  routes: [{ prefix: '/api', pool: 'api' }],
  rateLimit: {
    max: 5,
    timeWindow: '1 minute',
    redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    onStoreError: process.env.ON_STORE_ERROR === 'deny' ? 'deny' : 'allow'
  }
})

await serve(app, {
  upstreams: [api],
  banner: ['fastify-upstream shared rate limit: 5 requests a minute per client IP, counted in Redis'],
  tries: [
    ['for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{http_code}\\n" $GW/api/x; done', 'five 200s, then 429'],
    ['curl -i $GW/api/x', 'the 429: Retry-After, RateLimit-*, Proxy-Status'],
    ["curl -s '$GW/_upstream?format=json' | grep -o '\"rateLimitStore\":{[^}]*}'", 'the store as the status report sees it']
  ]
})
