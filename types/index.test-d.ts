// Type tests: compiled (not run) by `npm run test:types`. A line marked @ts-expect-error must
// fail to compile, so a type that becomes too loose breaks the build.
import Fastify from 'fastify'
import upstream, {
  fastifyUpstream, OptionsError, frameworkErrors, clientErrorHandler, requestIdFrom,
  type UpstreamOptions, type PoolSnapshot, type TargetSnapshot, type ProxyErrorType, type Problem, type Failure,
  type ProbeResult, type StatusReport, type Finding, type RequestStory, type AuthToken, type CacheSnapshot
} from 'fastify-upstream'
import { Registry } from 'prom-client'
import { Redis } from 'ioredis'

const app = Fastify()
// The package's frameworkErrors and clientErrorHandler fit Fastify's options as they are.
const withFrameworkErrors = Fastify({ frameworkErrors, clientErrorHandler })
// requestIdFrom is a genReqId as Fastify takes it.
const withRequestIds = Fastify({ genReqId: requestIdFrom('x-request-id', { maxLength: 64, generate: () => 'id' }) })
// @ts-expect-error maxLength is a number
requestIdFrom('x-request-id', { maxLength: '64' })

const options: UpstreamOptions = {
  pools: {
    users: {
      targets: ['http://127.0.0.1:3001', { url: 'http://127.0.0.1:3002', weight: 2, backup: true }],
      balancer: 'least-request',
      timeouts: { connect: 1000, headers: 5000, body: 5000, total: 10000 },
      connections: { perTarget: 64, keepAlive: 2000 },
      health: { path: '/healthz', expect: { status: '2xx', body: /ok/ } },
      tls: { rejectUnauthorized: true }
    }
  },
  routes: [
    { prefix: '/users', pool: 'users', methods: ['GET', 'POST'], websocket: false, timeouts: { headers: 100 } },
    { prefix: '/uploads', pool: 'users', bodyLimit: false },
    { prefix: '/forms', pool: 'users', bodyLimit: 64 * 1024 }
  ],
  errors: { expose: (request) => request.headers['x-debug'] === '1', proxyName: 'edge' },
  requestIdHeader: 'x-request-id',
  status: { path: '/_status', expose: 'full', keep: 500, diagnosis: { avgLatency: 1500, outlier: 4 } },
  metrics: { path: '/metrics', registry: new Registry() }
}
await app.register(upstream, options)
await app.register(upstream, { ...options, status: false, metrics: false })
// @ts-expect-error: keep is a number of requests
const badKeep: UpstreamOptions['status'] = { keep: 'all' }
const probed: Promise<ProbeResult> = app.upstream.probe('users', 'http://127.0.0.1:3001')
const readReport = (report: StatusReport): string => report.diagnosis.map((f: Finding) => `${f.severity} ${f.title} ${f.action}`).join('\n')
const readStory = (story: RequestStory): number => story.attempts.length + story.answer.status
await app.register(fastifyUpstream, options)

// HTTP/2 pools and gRPC routes.
const rpc: UpstreamOptions = {
  pools: { rpc: { targets: ['http://127.0.0.1:50051'], protocol: 'h2c', connections: { streams: 50 } } },
  routes: [{ prefix: '/helloworld.Greeter', pool: 'rpc', grpc: true }]
}
// @ts-expect-error: protocol is 'http1', 'h2' or 'h2c'
const badProtocol: UpstreamOptions['pools'][string] = { targets: ['http://127.0.0.1:1'], protocol: 'http2' }
// @ts-expect-error: a route needs a pool
await app.register(upstream, { pools: {}, routes: [{ prefix: '/x' }] })
// @ts-expect-error: balancer names are a closed set
const badBalancer: UpstreamOptions['pools'][string]['balancer'] = 'fastest'
// @ts-expect-error: timeouts are numbers of milliseconds
const badTimeout: UpstreamOptions['pools'][string]['timeouts'] = { connect: '2s' }
// Any timeout can be off, and so can the connection cap; a route can keep Location as sent.
const longLived: UpstreamOptions['pools'][string] = { targets: ['http://127.0.0.1:3003'], timeouts: { total: false, body: false, headers: false, connect: false }, connections: { perTarget: false } }
const rawRedirects: UpstreamOptions['routes'][number] = { prefix: '/raw', pool: 'users', rewriteLocation: false }
// @ts-expect-error: true is not a duration
const badOff: UpstreamOptions['pools'][string]['timeouts'] = { total: true }
// Credentials: static headers and a token function, sync or async, expiresAt as epoch ms or a Date.
const withAuth: UpstreamOptions['pools'][string]['auth'] = { headers: { 'x-api-key': 'k' }, token: async (): Promise<AuthToken> => ({ value: 't', expiresAt: new Date() }) }
const syncToken: UpstreamOptions['pools'][string]['auth'] = { token: () => ({ value: 't', expiresAt: Date.now() + 60_000 }) }
// @ts-expect-error: the token function gives { value }, not a bare string
const badToken: UpstreamOptions['pools'][string]['auth'] = { token: async () => 't' }

// Names resolve through discovery; SRV targets name a record, not a URL.
const discovered: UpstreamOptions['pools'][string] = {
  targets: ['http://api.internal:8080', { srv: '_http._tcp.api.service.consul', protocol: 'https', backup: true }],
  discovery: { refresh: 'ttl', minTtl: 500, maxTtl: 30000, timeout: 1000, servers: ['127.0.0.1:5353'], family: 'ipv4' }
}
// @ts-expect-error: family is one of the named choices
const badFamily: UpstreamOptions['pools'][string]['discovery'] = { family: 4 }
// @ts-expect-error: SRV records carry their own weights
const badSrv: UpstreamOptions['pools'][string]['targets'][number] = { srv: '_http._tcp.api', weight: 2 }
// @ts-expect-error: servers are 'ip:port' strings
const badServers: UpstreamOptions['pools'][string]['discovery'] = { servers: '127.0.0.1' }

const pools: PoolSnapshot[] = app.upstream.pools()
const dnsNames: Array<string | null> = pools.flatMap((p) => p.dns.map((n) => n.lastError?.code ?? n.nextRefresh))
const targets: TargetSnapshot[] = app.upstream.pool('users').targets()
const inFlight: number = targets[0]!.inFlight
const type: ProxyErrorType = 'connection_refused'
// @ts-expect-error: error types are RFC 9209's names
const badType: ProxyErrorType = 'refused'
const readProblem = (problem: Problem): string => `${problem.status} ${problem.error} ${problem.requestId}`
const readFailure = (failure: Failure): number => failure.attempts.length
const isOptionsError = (err: unknown): boolean => err instanceof OptionsError && err.path.length > 0
// errors.render receives the gateway's Problem, typed: its members need no casts.
const renders: UpstreamOptions['errors'] = {
  render: (problem: Problem, request) => problem.blame === 'client'
    ? `<h1>${problem.status} ${problem.title}</h1><p>${request.id}</p>`
    : { ...problem, support: 'https://status.example' }
}
const passesThrough: UpstreamOptions['errors'] = { render: (problem) => problem }
// @ts-expect-error: a Problem's status is a number
const badRender: UpstreamOptions['errors'] = { render: (problem) => problem.status.toUpperCase() }
// @ts-expect-error: render answers with a body, not a status
const badRenderResult: UpstreamOptions['errors'] = { render: (problem) => problem.status }

// Rate limits: @fastify/rate-limit's options, counted in Redis by URL or by a client of one's own.
const sharedLimit: UpstreamOptions['rateLimit'] = { max: 100, timeWindow: '1 minute', redis: 'redis://127.0.0.1:6379', onStoreError: 'deny', keyGenerator: (request) => String(request.headers['x-api-key'] ?? request.ip) }
const ownClient: UpstreamOptions['rateLimit'] = { redis: new Redis({ lazyConnect: true }), nameSpace: 'gw-' }
// @ts-expect-error: a store that fails either allows or denies
const badStoreError: UpstreamOptions['rateLimit'] = { onStoreError: 'retry' }
// @ts-expect-error: onStoreError decides what @fastify/rate-limit's skipOnError would
const badSkip: UpstreamOptions['rateLimit'] = { skipOnError: true }
const storeState = (report: StatusReport): string => report.rateLimitStore?.state ?? 'none'

// Request stories in Redis: a URL, a client, or the long form with a TTL and a key prefix.
const storiesByUrl: UpstreamOptions['status'] = { store: 'redis://127.0.0.1:6379' }
const storiesByClient: UpstreamOptions['status'] = { keep: 200, store: { redis: new Redis({ lazyConnect: true }), ttl: 3_600_000, prefix: 'gw:' } }
// @ts-expect-error: the long form needs its redis
const badStories: UpstreamOptions['status'] = { store: { ttl: 1000 } }
const storiesState = (report: StatusReport): string => report.storyStore?.state ?? 'none'
const failing = (report: StatusReport): boolean => report.pools.some((p) => p.targets.some((t) => t.state === 'failing'))

// Route caches: true, or options; stores by URL or client; purge by route and path.
const cachedRoute: UpstreamOptions['routes'][number] = { prefix: '/c', pool: 'users', cache: { store: 'redis://127.0.0.1:6379', maxBytes: 1 << 20, maxEntryBytes: 1 << 16, staleIfError: 600_000, staleWhileRevalidate: 10_000, lock: false } }
const cachedByClient: UpstreamOptions['routes'][number] = { prefix: '/c', pool: 'users', cache: { store: new Redis({ lazyConnect: true }) } }
const cachedDefaults: UpstreamOptions['routes'][number] = { prefix: '/c', pool: 'users', cache: true }
// @ts-expect-error: sizes are numbers of bytes
const badCacheSize: UpstreamOptions['routes'][number] = { prefix: '/c', pool: 'users', cache: { maxBytes: '64MB' } }
const purged: Promise<number> = app.upstream.purge('/c', '/c/item')
const cacheHits = (report: StatusReport): number => report.caches?.reduce((sum, c: CacheSnapshot) => sum + c.counts.hits, 0) ?? 0
const storyCache = (story: RequestStory): string => story.cache ?? 'not from the cache'

export { cachedRoute, cachedByClient, cachedDefaults, badCacheSize, purged, cacheHits, storyCache }
export { badKeep, probed, readReport, readStory, renders, passesThrough, badRender, badRenderResult, withAuth, syncToken, badToken, sharedLimit, ownClient, badStoreError, badSkip, storeState }
export { storiesByUrl, storiesByClient, badStories, storiesState, failing }
export { discovered, badSrv, badServers, badFamily, dnsNames }
export { withFrameworkErrors, withRequestIds, badBalancer, badTimeout, longLived, rawRedirects, badOff, pools, inFlight, type, badType, readProblem, readFailure, isOptionsError }

// Header rewriters: synchronous functions of the request's headers and of the answer's, with its status.
const rewritten: UpstreamOptions['routes'][number] = {
  prefix: '/rewritten',
  pool: 'users',
  rewriteRequestHeaders: (request, headers) => ({ ...headers, 'x-tenant': request.headers['x-user'] }),
  rewriteResponseHeaders: (headers, _request, status) => ({ ...headers, 'x-status': status, server: undefined })
}
// @ts-expect-error a rewriter returns headers
const rewriterWithoutHeaders: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'users', rewriteRequestHeaders: () => 'x-tenant: a' }
// @ts-expect-error the response rewriter's status is a number
const rewriterWithStringStatus: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'users', rewriteResponseHeaders: (headers, _request, status: string) => headers }

// Fastify's own route options, as Fastify types them: hooks (one or a list), config, constraints.
const guarded: UpstreamOptions['routes'][number] = {
  prefix: '/admin',
  pool: 'users',
  onRequest: async (request, reply) => { if (request.headers.authorization === undefined) await reply.code(401).send() },
  preHandler: [function (_request, _reply, done) { done() }],
  preValidation: (_request, _reply, done) => { done() },
  config: { tenant: 'acme' },
  constraints: { host: 'admin.example', version: '1.0.0' }
}
// @ts-expect-error a hook is a function
const badHook: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'users', onRequest: 'auth' }
// @ts-expect-error a host constraint is a string or a RegExp
const badConstraint: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'users', constraints: { host: 42 } }
void [rewritten, rewriterWithoutHeaders, rewriterWithStringStatus, guarded, badHook, badConstraint]

export { rpc, badProtocol }

// Routing: match rules (strings or RegExps), split shares, a mirror, and sticky pools.
const routing: UpstreamOptions = {
  pools: {
    stable: { targets: ['http://127.0.0.1:3001'], sticky: { cookie: 'srv', ttl: 3_600_000 } },
    canary: { targets: ['http://127.0.0.1:3002'], sticky: {} },
    shadow: { targets: ['http://127.0.0.1:3003'] }
  },
  routes: [{
    prefix: '/app',
    pool: 'stable',
    match: [{ header: { 'x-canary': '1' }, pool: 'canary' }, { cookie: { tester: /^(ada|grace)$/ }, query: { v: '2' }, pool: 'canary' }],
    split: { canary: 5 },
    mirror: { pool: 'shadow', percent: 10, maxInFlight: 50, bodyLimit: 65536 }
  }]
}
// @ts-expect-error a match rule names its pool
const ruleWithoutPool: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'stable', match: [{ header: { a: '1' } }] }
// @ts-expect-error a match value is a string or a RegExp
const numericMatch: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'stable', match: [{ query: { v: 2 }, pool: 'canary' }] }
// @ts-expect-error a split share is a number of percent
const stringShare: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'stable', split: { canary: '5%' } }
// @ts-expect-error a mirror names its pool
const mirrorWithoutPool: UpstreamOptions['routes'][number] = { prefix: '/x', pool: 'stable', mirror: { percent: 5 } }
void [routing, ruleWithoutPool, numericMatch, stringShare, mirrorWithoutPool]
