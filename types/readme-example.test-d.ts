// The README's example of discovery, credentials and a shared rate limit, kept compiling.
import Fastify from 'fastify'
import upstream from '../lib/index.js'
const app = Fastify()
declare function fetchToken (): Promise<{ access_token: string, expires_in: number }>
await app.register(upstream, {
  pools: {
    api: {
      // One target per address of the name, looked up again as its TTL runs out.
      targets: ['http://api.internal:8080'],
      discovery: { servers: ['10.0.0.2:53'], minTtl: 5000 },
      // A bearer token from your identity provider, refreshed shortly before it expires.
      auth: {
        token: async () => {
          const t = await fetchToken()
          return { value: t.access_token, expiresAt: Date.now() + t.expires_in * 1000 }
        }
      }
    },
    search: {
      // Consul's SRV records: one target per record, with its port and weight.
      targets: [{ srv: '_http._tcp.search.service.consul' }],
      auth: { headers: { 'x-api-key': process.env.SEARCH_KEY ?? '' } }
    }
  },
  routes: [{ prefix: '/api', pool: 'api' }, { prefix: '/search', pool: 'search' }],
  // 100 requests a minute per client address, counted in Redis by every gateway instance.
  rateLimit: { max: 100, timeWindow: '1 minute', redis: 'redis://redis.internal:6379' }
})
