// An app written for @fastify/http-proxy, moved by changing its import (docs/migrating.md).
//
//   npm run build && node --import tsx examples/http-proxy.ts
//
// It starts its own two upstream servers. /api needs `Authorization: Bearer secret` (a
// preHandler) and reaches the API as /v1/... with an x-user header (a request rewriter);
// /auth reaches the other service under /signon; /down is a service that is not running.
import Fastify from 'fastify'
import { httpProxy as proxy } from 'fastify-upstream' // was: import proxy from '@fastify/http-proxy'
import { freePort, startUpstream } from './lib/upstream.js'
import { serve } from './lib/gateway.js'

const api = await startUpstream('api', { log: true })
const sso = await startUpstream('sso')

const app = Fastify({ logger: true })
app.register(proxy, {
  upstream: api.url,
  prefix: '/api',
  rewritePrefix: '/v1',
  preHandler: async (request, reply) => {
    if (request.headers.authorization !== 'Bearer secret') return await reply.code(401).send({ error: 'unauthorized' })
  },
  replyOptions: {
    rewriteRequestHeaders: (_request, headers) => ({ ...headers, 'x-user': 'alice' })
  }
})
app.register(proxy, { upstream: `${sso.url}/signon`, prefix: '/auth' })
app.register(proxy, { upstream: `http://127.0.0.1:${await freePort()}`, prefix: '/down' })

await serve(app, {
  upstreams: [api, sso],
  banner: ['An @fastify/http-proxy app on fastify-upstream\'s httpProxy: /api, /auth and /down'],
  tries: [
    ['curl -i $GW/api/users', '401 from the preHandler, as before'],
    ["curl -s -H 'authorization: Bearer secret' $GW/api/users", 'the API sees /v1/users, with the x-user header the rewriter adds'],
    ['curl -s $GW/auth/user', 'the other service sees /signon/user'],
    ["curl -i -H 'accept: application/json' $GW/down/x", 'the gateway\'s 502 with Proxy-Status, where http-proxy said 500'],
    ["curl -s -H 'accept: application/json' $GW/_upstream", 'one status page for the three registrations']
  ]
})
