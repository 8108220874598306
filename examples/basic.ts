// The smallest gateway: one pool of two targets behind one route.
//
//   npm run build && node --import tsx examples/basic.ts
//
// It starts its own two upstream servers, so it runs as it is. GET /api/hello goes to a
// target as GET /hello (a route strips its prefix unless told otherwise).
import Fastify from 'fastify'
import upstream from 'fastify-upstream'
import { startUpstream } from './lib/upstream.js'
import { serve } from './lib/gateway.js'

const a = await startUpstream('api-a')
const b = await startUpstream('api-b')

const app = Fastify({ logger: true })
await app.register(upstream, {
  pools: {
    api: { targets: [a.url, b.url] }
  },
  routes: [{ prefix: '/api', pool: 'api' }]
})

await serve(app, {
  upstreams: [a, b],
  banner: [`fastify-upstream basic example: pool "api" = ${a.url} (${a.name}), ${b.url} (${b.name})`],
  tries: [
    ['curl -s $GW/api/hello', 'run it twice: round-robin alternates api-a and api-b'],
    ["curl -i '$GW/api/users/1?verbose=1'", 'the target sees /users/1?verbose=1; note Proxy-Status and x-request-id']
  ]
})
