import t from 'tap'
import Fastify from 'fastify'
import upstream, { OptionsError } from '../lib/index.js'
import { validateOptions } from '../lib/options/validate.js'

const ok = { pools: { users: { targets: ['http://127.0.0.1:3001'] } }, routes: [{ prefix: '/users', pool: 'users' }] }

// Each case: the options given and the exact message the operator reads.
const cases: Array<[string, unknown, string]> = [
  ['not an object', 'pools', 'options: expected an object, got "pools"'],
  ['missing pools', { routes: ok.routes }, 'pools: expected an object, got undefined'],
  ['empty pools', { pools: {}, routes: ok.routes }, 'pools: expected at least one pool, got an object'],
  ['unknown top-level key suggests the near one', { ...ok, rutes: [] }, 'rutes: unknown option (did you mean "routes"?)'],
  ['unknown pool key suggests the near one', { ...ok, pools: { users: { targets: ['http://a:1'], helth: {} } } }, 'pools.users.helth: unknown option (did you mean "health"?)'],
  ['target without scheme', { ...ok, pools: { users: { targets: ['http://127.0.0.1:3001', { url: 'localhost:3002' }] } } }, 'pools.users.targets[1].url: expected an http(s) URL, got "localhost:3002"'],
  ['target string without scheme', { ...ok, pools: { users: { targets: ['127.0.0.1:3001'] } } }, 'pools.users.targets[0]: expected an http(s) URL, got "127.0.0.1:3001"'],
  ['target with another scheme', { ...ok, pools: { users: { targets: ['ftp://127.0.0.1'] } } }, 'pools.users.targets[0]: expected an http(s) URL, got "ftp://127.0.0.1"'],
  ['target with a path', { ...ok, pools: { users: { targets: ['http://127.0.0.1:3001/api'] } } }, 'pools.users.targets[0]: expected an origin without path or query (map paths with routes[].rewritePrefix), got "http://127.0.0.1:3001/api"'],
  ['target with credentials', { ...ok, pools: { users: { targets: ['http://u:p@127.0.0.1:3001'] } } }, 'pools.users.targets[0]: expected a URL without credentials (use pools.<name>.auth), got "http://u:p@127.0.0.1:3001"'],
  ['duplicate target', { ...ok, pools: { users: { targets: ['http://127.0.0.1:3001', 'http://127.0.0.1:3001/'] } } }, 'pools.users.targets[1]: "http://127.0.0.1:3001" is listed twice'],
  ['no targets', { ...ok, pools: { users: { targets: [] } } }, 'pools.users.targets: expected at least one target, got an array'],
  ['weight zero', { ...ok, pools: { users: { targets: [{ url: 'http://a:1', weight: 0 }] } } }, 'pools.users.targets[0].weight: expected an integer from 1 to 1000, got 0'],
  ['backup not boolean', { ...ok, pools: { users: { targets: [{ url: 'http://a:1', backup: 'yes' }] } } }, 'pools.users.targets[0].backup: expected true or false, got "yes"'],
  ['unknown balancer', { ...ok, pools: { users: { targets: ['http://a:1'], balancer: 'fastest' } } }, 'pools.users.balancer: expected one of "round-robin", "least-request", "p2c-ewma", "random", got "fastest"'],
  ['negative timeout', { ...ok, pools: { users: { targets: ['http://a:1'], timeouts: { connect: -1 } } } }, 'pools.users.timeouts.connect: expected a duration in milliseconds >= 1, or false for none, got -1'],
  ['timeout as a string', { ...ok, pools: { users: { targets: ['http://a:1'], timeouts: { headers: '30s' } } } }, 'pools.users.timeouts.headers: expected a duration in milliseconds >= 1, or false for none, got "30s"'],
  ['unknown timeout', { ...ok, pools: { users: { targets: ['http://a:1'], timeouts: { read: 5 } } } }, 'pools.users.timeouts.read: unknown option (known options: connect, headers, body, total)'],
  ['perTarget zero', { ...ok, pools: { users: { targets: ['http://a:1'], connections: { perTarget: 0 } } } }, 'pools.users.connections.perTarget: expected an integer >= 1, got 0'],
  ['health path without slash', { ...ok, pools: { users: { targets: ['http://a:1'], health: { path: 'healthz' } } } }, 'pools.users.health.path: expected a path starting with "/", got "healthz"'],
  ['health expect status', { ...ok, pools: { users: { targets: ['http://a:1'], health: { path: '/h', expect: { status: '2XX' } } } } }, 'pools.users.health.expect.status: expected "1xx".."5xx", a status code, a list of codes or { from, to }, got "2XX"'],
  ['retry on unknown condition', { ...ok, pools: { users: { targets: ['http://a:1'], retry: { on: ['reset', 'oops'] } } } }, 'pools.users.retry.on[1]: expected one of "connect-failure", "refused-stream", "reset", "timeout", "5xx", got "oops"'],
  ['outlier percent over 100', { ...ok, pools: { users: { targets: ['http://a:1'], outlier: { maxEjectedPercent: 150 } } } }, 'pools.users.outlier.maxEjectedPercent: expected an integer from 0 to 100, got 150'],
  ['tls not boolean', { ...ok, pools: { users: { targets: ['https://a:1'], tls: { rejectUnauthorized: 0 } } } }, 'pools.users.tls.rejectUnauthorized: expected true or false, got 0'],
  ['routes missing', { pools: ok.pools }, 'routes: expected an array, got undefined'],
  ['route naming a missing pool', { ...ok, routes: [{ prefix: '/u', pool: 'userz' }] }, 'routes[0].pool: no pool named "userz" (pools: users)'],
  ['route prefix without slash', { ...ok, routes: [{ prefix: 'users', pool: 'users' }] }, 'routes[0].prefix: expected a path starting with "/", got "users"'],
  ['duplicate route prefix', { ...ok, routes: [{ prefix: '/u', pool: 'users' }, { prefix: '/u', pool: 'users' }] }, 'routes[1].prefix: "/u" is already used by routes[0]'],
  ['unknown method', { ...ok, routes: [{ prefix: '/u', pool: 'users', methods: ['GET', 'FETCH'] }] }, 'routes[0].methods[1]: expected one of "DELETE", "GET", "HEAD", "PATCH", "POST", "PUT", "OPTIONS", "TRACE", "SEARCH", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "MKCALENDAR", got "FETCH"'],
  ['route timeout override checked', { ...ok, routes: [{ prefix: '/u', pool: 'users', timeouts: { total: 0 } }] }, 'routes[0].timeouts.total: expected a duration in milliseconds >= 1, or false for none, got 0'],
  ['timeout longer than a Node timer', { ...ok, pools: { users: { targets: ['http://a:1'], timeouts: { body: 2 ** 31 } } } }, 'pools.users.timeouts.body: expected a duration in milliseconds <= 2147483647 (Node\'s longest timer; use false to turn a timeout off), got 2147483648'],
  ['rewriteLocation not a boolean', { ...ok, routes: [{ prefix: '/u', pool: 'users', rewriteLocation: 'yes' }] }, 'routes[0].rewriteLocation: expected true or false, got "yes"'],
  ['websocket not boolean', { ...ok, routes: [{ prefix: '/u', pool: 'users', websocket: 1 }] }, 'routes[0].websocket: expected true or false, got 1'],
  ['bodyLimit negative', { ...ok, routes: [{ prefix: '/u', pool: 'users', bodyLimit: -1 }] }, 'routes[0].bodyLimit: expected a number of bytes (an integer >= 0) or false for no limit, got -1'],
  ['bodyLimit as text', { ...ok, routes: [{ prefix: '/u', pool: 'users', bodyLimit: '10mb' }] }, 'routes[0].bodyLimit: expected a number of bytes (an integer >= 0) or false for no limit, got "10mb"'],
  ['errors.expose', { ...ok, errors: { expose: 'everything' } }, 'errors.expose: expected one of "public", "full", "auto", got "everything"'],
  ['errors.proxyName not a token', { ...ok, errors: { proxyName: 'my gateway' } }, 'errors.proxyName: expected a structured-field token (letters, digits, "-", ".", ...), got "my gateway"'],
  ['errors.intercept status', { ...ok, errors: { intercept: [502, 999] } }, 'errors.intercept[1]: expected an integer from 100 to 599, got 999'],
  ['requestIdHeader not a header name', { ...ok, requestIdHeader: 'x request id' }, 'requestIdHeader: expected an HTTP header name, got "x request id"'],
  ['discovery.servers not addresses', { ...ok, pools: { users: { targets: ['http://a:1'], discovery: { servers: ['dns.example:53'] } } } }, 'pools.users.discovery.servers[0]: expected a DNS server address such as "10.0.0.53", "127.0.0.1:5353" or "[::1]:53", got "dns.example:53"'],
  ['discovery.servers empty', { ...ok, pools: { users: { targets: ['http://a:1'], discovery: { servers: [] } } } }, 'pools.users.discovery.servers: expected at least one "ip:port", got an array'],
  ['discovery.timeout zero', { ...ok, pools: { users: { targets: ['http://a:1'], discovery: { timeout: 0 } } } }, 'pools.users.discovery.timeout: expected a duration in milliseconds >= 1, got 0'],
  ['srv target with a url', { ...ok, pools: { users: { targets: [{ srv: '_http._tcp.a', url: 'http://a:1' }] } } }, 'pools.users.targets[0].url: give either url or srv, not both'],
  ['srv target protocol', { ...ok, pools: { users: { targets: [{ srv: '_http._tcp.a', protocol: 'ftp' }] } } }, 'pools.users.targets[0].protocol: expected one of "http", "https", got "ftp"'],
  ['protocol', { ...ok, pools: { users: { targets: ['http://a:1'], protocol: 'http2' } } }, 'pools.users.protocol: expected one of "http1", "h2", "h2c", got "http2"'],
  ['h2 to an http target', { ...ok, pools: { users: { targets: ['http://a:1'], protocol: 'h2' } } }, 'pools.users.protocol: \'h2\' is HTTP/2 over TLS, but target "http://a:1" is http://; use \'h2c\' for HTTP/2 in clear text, or an https:// URL'],
  ['h2c to an https target', { ...ok, pools: { users: { targets: ['https://a:1'], protocol: 'h2c' } } }, 'pools.users.protocol: \'h2c\' is HTTP/2 in clear text, but target "https://a:1" is https://; use \'h2\' for HTTP/2 over TLS, or an http:// URL'],
  ['connections.streams', { ...ok, pools: { users: { targets: ['http://a:1'], protocol: 'h2c', connections: { streams: 0 } } } }, 'pools.users.connections.streams: expected an integer >= 1, got 0'],
  ['grpc route on an http1 pool', { ...ok, pools: { users: { targets: ['http://a:1'] } }, routes: [{ prefix: '/rpc', pool: 'users', grpc: true }] }, 'routes[0].grpc: gRPC needs HTTP/2 to the targets, and pool "users" speaks HTTP/1.1 (protocol \'http1\'); set protocol: \'h2c\' (or \'h2\' for https targets) on pool "users"'],
  ['health.grpc on an http1 pool', { ...ok, pools: { users: { targets: ['http://a:1'], health: { grpc: {} } } } }, 'pools.users.health.grpc: gRPC health checks need HTTP/2 to the targets: set protocol: \'h2c\' (or \'h2\') on the pool'],
  ['health.grpc and health.path', { ...ok, pools: { users: { targets: ['http://a:1'], protocol: 'h2c', health: { grpc: {}, path: '/healthz' } } } }, 'pools.users.health.path: give health.path or health.grpc, not both'],
  ['srv name', { ...ok, pools: { users: { targets: [{ srv: 'not a name' }] } } }, 'pools.users.targets[0].srv: expected a DNS name such as "_http._tcp.api.service.consul", got "not a name"'],
  ['status.diagnosis.dnsLatency', { ...ok, status: { diagnosis: { dnsLatency: -1 } } }, 'status.diagnosis.dnsLatency: expected a duration in milliseconds >= 1, got -1'],
  ['hash balancer key', { ...ok, pools: { users: { targets: ['http://a:1'], balancer: { hash: 'query:id' } } } }, 'pools.users.balancer.hash: expected "ip", "header:NAME" or "cookie:NAME", got "query:id"']
]

for (const [name, options, message] of cases) {
  t.test(`bad option: ${name}`, async (t) => {
    t.throws(() => validateOptions(options), { name: 'OptionsError', message })
  })
}

t.test('register rejects bad options with the option path, and starts nothing', async (t) => {
  const before = process.getActiveResourcesInfo().length
  const app = Fastify({ logger: false })
  app.register(upstream, { ...ok, pools: { users: { targets: ['localhost:3002'] } } } as never)
  await t.rejects(async () => await app.ready(), new OptionsError('pools.users.targets[0]', 'expected an http(s) URL, got "localhost:3002"'))
  await app.close()
  t.equal(process.getActiveResourcesInfo().length, before, 'no timer, socket or handle was left behind')
})

t.test('defaults from SPEC.md fill in what is not given', async (t) => {
  const config = validateOptions(ok)
  const pool = config.pools.get('users')!
  t.same(pool.timeouts, { connect: 2000, headers: 30000, body: 60000, total: false }, 'no wall clock cuts a stream that keeps sending')
  t.same(pool.connections, { perTarget: Infinity, keepAlive: 4000, streams: 100 }, 'no cap on open connections, as nginx and HAProxy')
  t.same([...pool.retry.on], ['connect-failure', 'refused-stream', 'reset'])
  t.same(pool.balancer, { kind: 'round-robin' })
  t.same(pool.targets, [{ url: 'http://127.0.0.1:3001', weight: 1, backup: false, srv: null }])
  t.same(pool.discovery, { refresh: 'ttl', minTtl: 1000, maxTtl: 60000, timeout: 2000, servers: null, family: 'prefer-ipv4' }, 'names follow their TTL, within 1 s to 60 s, asking the system resolver, IPv4 first')
  t.equal(config.status!.diagnosis.dnsLatency, 200)
  const srv = validateOptions({ ...ok, pools: { users: { targets: [{ srv: '_http._tcp.api.service.consul', protocol: 'https', backup: true }] } } }).pools.get('users')!
  t.same(srv.targets, [{ url: 'srv+https://_http._tcp.api.service.consul', weight: 1, backup: true, srv: { name: '_http._tcp.api.service.consul', protocol: 'https:' } }])
  t.equal(pool.tls.rejectUnauthorized, true, 'upstream certificates are verified by default')
  t.same(pool.outlier, { consecutiveFailures: 5, ejectFor: 30000, maxEjectFor: 300000, maxEjectedPercent: 50 })
  t.same([...pool.retry.methods], ['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
  t.equal(config.requestIdHeader, 'x-request-id')
  t.equal(config.errors.proxyName, 'fastify-upstream')
  t.equal(config.routes[0]!.rewritePrefix, '')
  t.equal(config.routes[0]!.bodyLimit, null, 'bodies of any size stream by default')
  t.equal(config.routes[0]!.rewriteLocation, true)
  t.equal(validateOptions({ ...ok, routes: [{ prefix: '/u', pool: 'users', bodyLimit: 5000 }] }).routes[0]!.bodyLimit, 5000)
})

t.test('route timeouts override the pool one by one', async (t) => {
  const config = validateOptions({
    pools: { users: { targets: ['http://a:1'], timeouts: { headers: 5000, body: 7000 } } },
    routes: [{ prefix: '/u', pool: 'users', timeouts: { headers: 100 } }]
  })
  t.same(config.routes[0]!.timeouts, { connect: 2000, headers: 100, body: 7000, total: false })
})

t.test('every timeout can be turned off with false', async (t) => {
  const config = validateOptions({
    pools: { users: { targets: ['http://a:1'], timeouts: { connect: false, headers: false, body: false, total: 5000 } } },
    routes: [{ prefix: '/u', pool: 'users', timeouts: { total: false, connect: 100 } }]
  })
  t.same(config.routes[0]!.timeouts, { connect: 100, headers: false, body: false, total: false })
})

t.test('errors.expose "auto" is full, except under NODE_ENV=production', async (t) => {
  const saved = process.env.NODE_ENV
  t.teardown(() => { process.env.NODE_ENV = saved })
  process.env.NODE_ENV = 'development'
  t.equal(validateOptions(ok).errors.expose, 'full')
  process.env.NODE_ENV = 'production'
  t.equal(validateOptions(ok).errors.expose, 'public')
})
