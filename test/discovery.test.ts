// DNS discovery against a real DNS server on loopback (test/helpers/dns.ts): targets follow
// A-record changes, removed addresses drain, kept ones keep their state, a failing resolver
// leaves the last good set in place (logged once), a name that never resolved answers
// dns_error, SRV records become targets, and `localhost` still works without servers.
import t from 'tap'
import { startGateway, waitFor, type Gateway } from './helpers/gateway.js'
import { startUpstream, startHttpsUpstream, privateCa, opensslMissing, type Running } from './helpers/servers.js'
import { startDns, type DnsServer } from './helpers/dns.js'
import type { PoolInput, UpstreamOptions } from '../lib/index.js'
import { ourProxyStatus } from './helpers/proxy-status.js'

const FAST = { minTtl: 100, maxTtl: 400 }

async function gateway (tt: Parameters<typeof startGateway>[0], pool: PoolInput, extra: Partial<UpstreamOptions> = {}): Promise<Gateway> {
  return await startGateway(tt, { pools: { p: pool }, routes: [{ prefix: '/', pool: 'p' }], errors: { expose: 'full' }, ...extra })
}

const targets = (gw: Gateway): ReturnType<Gateway['app']['upstream']['pools']>[number]['targets'] => gw.app.upstream.pool('p').targets()
const names = (gw: Gateway): ReturnType<Gateway['app']['upstream']['pools']>[number]['dns'] => gw.app.upstream.pools()[0]!.dns

async function json (gw: Gateway, path = '/'): Promise<{ status: number, body: Record<string, unknown>, headers: Record<string, unknown> }> {
  const res = await gw.request(path, { headers: { accept: 'application/json' } })
  const text = await res.body.text()
  return { status: res.statusCode, body: JSON.parse(text) as Record<string, unknown>, headers: res.headers }
}

/** Two upstreams on the same port: 127.0.0.1 and 127.0.0.2 (both loopback on Linux). */
async function twoAddresses (tt: { teardown: (fn: () => unknown) => void }, handlerOne?: Parameters<typeof startUpstream>[1]): Promise<[Running, Running]> {
  const one = await startUpstream('one', handlerOne)
  const two = await startUpstream('two', undefined, { host: '127.0.0.2', port: one.port })
  tt.teardown(async () => { await Promise.all([one.close(), two.close()]) })
  return [one, two]
}

t.test('targets follow A-record changes within the TTL; requests carry the name in Host', async (t) => {
  const [one] = await twoAddresses(t)
  const dns = await startDns(t, { 'api.test': { a: ['127.0.0.1'], ttl: 0 } })
  const gw = await gateway(t, { targets: [`http://api.test:${one.port}`], discovery: { ...FAST, servers: [dns.address] } })

  t.same(targets(gw).map((x) => x.url), [`http://api.test:${one.port} (127.0.0.1)`], 'one target per address, labelled with the name')
  const first = await json(gw)
  t.equal(first.status, 200)
  t.equal(first.body.name, 'one')
  t.equal((first.body.headers as Record<string, string>).host, `api.test:${one.port}`, 'Host is the name, not the address')

  dns.set('api.test', { a: ['127.0.0.1', '127.0.0.2'], ttl: 0 })
  await waitFor(() => targets(gw).length === 2, 3000, 'the second address')
  const seen = new Set<unknown>()
  for (let i = 0; i < 10 && seen.size < 2; i++) seen.add((await json(gw)).body.name)
  t.same([...seen].sort(), ['one', 'two'], 'both addresses take traffic')

  // The configured URL drains every address of the name; enable brings them back.
  gw.app.upstream.drain('p', `http://api.test:${one.port}`)
  t.same(targets(gw).map((x) => x.state), ['draining', 'draining'])
  gw.app.upstream.enable('p', `http://api.test:${one.port}`)
  t.same(targets(gw).map((x) => x.state), ['healthy', 'healthy'])

  dns.set('api.test', { a: ['127.0.0.2'], ttl: 0 })
  await waitFor(() => targets(gw).length === 1, 3000, 'the first address to leave')
  t.equal(targets(gw)[0]!.address, '127.0.0.2')
  t.equal((await json(gw)).body.name, 'two')
  const changes = gw.logs.filter((r) => r.name === 'api.test' && Array.isArray(r.added))
  t.ok(changes.some((r) => (r.removed as string[]).includes('127.0.0.1')), 'the change is logged with what left')
})

t.test('an address that leaves the answer drains: its in-flight request finishes, then it is gone and its connections closed', async (t) => {
  let release: (() => void) | null = null
  const closedSockets: string[] = []
  const [one] = await twoAddresses(t, (req, res) => {
    req.socket.once('close', () => closedSockets.push('one'))
    if (req.url === '/slow') {
      release = () => res.end('slow done')
      return
    }
    res.end('one')
  })
  const dns = await startDns(t, { 'api.test': { a: ['127.0.0.1'], ttl: 0 } })
  // Keep-alive far longer than the test: a closed connection is the gateway closing it.
  const gw = await gateway(t, { targets: [`http://api.test:${one.port}`], connections: { keepAlive: 60000 }, discovery: { ...FAST, servers: [dns.address] } })

  const slow = gw.request('/slow')
  await waitFor(() => release !== null, 3000, 'the slow request to arrive')
  dns.set('api.test', { a: ['127.0.0.2'], ttl: 0 })
  await waitFor(() => targets(gw).some((x) => x.address === '127.0.0.2'), 3000, 'the new address')
  const leaving = targets(gw).find((x) => x.address === '127.0.0.1')!
  t.equal(leaving.state, 'draining', 'the old address drains')
  t.equal(leaving.inFlight, 1)
  t.match(leaving.why, /no longer in the DNS answer for http:\/\/api\.test:\d+ since/)
  const fresh = await json(gw)
  t.equal(fresh.body.name, 'two', 'new requests go to the new address only')
  t.equal(closedSockets.length, 0, 'nothing closed while the request runs')

  release!()
  const res = await slow
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), 'slow done', 'the in-flight request finished')
  await waitFor(() => targets(gw).length === 1, 3000, 'the drained address to leave')
  t.equal(targets(gw)[0]!.address, '127.0.0.2')
  await waitFor(() => closedSockets.length > 0, 3000, "the old address's connection to close")
  t.pass('its keep-alive connection was closed with its dispatcher')
  // Nothing is kept per address once it has left: under churn the series would only grow.
  const metricsText = await (await gw.request('/metrics')).body.text()
  t.notMatch(metricsText, /target="api\.test:\d+ \(127\.0\.0\.1\)"/, 'the metrics no longer export the old address')
  t.match(metricsText, /target="api\.test:\d+ \(127\.0\.0\.2\)"/, 'the new one is exported')
  const report = await (await gw.request('/_upstream', { headers: { accept: 'application/json' } })).body.json() as { pools: Array<{ stats: { '15m': { requests: number } } }> }
  t.ok(report.pools[0]!.stats['15m'].requests >= 2, "the pool's totals keep the old address's requests")
})

t.test('an address that stays across refreshes keeps its Target: ejection and counters', async (t) => {
  const [one, two] = await twoAddresses(t)
  await two.close() // 127.0.0.2 refuses connections from now on
  const dns = await startDns(t, { 'api.test': { a: ['127.0.0.1', '127.0.0.2'], ttl: 0 } })
  const gw = await gateway(t, {
    targets: [`http://api.test:${one.port}`],
    outlier: { consecutiveFailures: 1, ejectFor: 30000, maxEjectedPercent: 100 },
    discovery: { ...FAST, servers: [dns.address] }
  })
  for (let i = 0; i < 4; i++) t.equal((await gw.request('/')).statusCode, 200, 'retried onto the live address')
  const before = targets(gw)
  const dead = before.find((x) => x.address === '127.0.0.2')!
  const live = before.find((x) => x.address === '127.0.0.1')!
  t.equal(dead.state, 'ejected')
  const queries = dns.queries.length
  await waitFor(() => dns.queries.length >= queries + 6, 3000, 'three more refreshes')
  const after = targets(gw)
  const deadAfter = after.find((x) => x.address === '127.0.0.2')!
  const liveAfter = after.find((x) => x.address === '127.0.0.1')!
  t.equal(deadAfter.state, 'ejected', 'still ejected')
  t.equal(deadAfter.ejectedUntil, dead.ejectedUntil, 'the same ejection')
  t.equal(deadAfter.since, dead.since)
  t.equal(liveAfter.requests, live.requests, 'counters kept')
  t.equal(deadAfter.failures, dead.failures)
})

t.test('a stopped DNS server: the last good set serves, one warning for the streak, one record on recovery', async (t) => {
  const up = await startUpstream('up')
  t.teardown(up.close)
  const dns = await startDns(t, { 'api.test': { a: ['127.0.0.1'], ttl: 0 } })
  const gw = await gateway(t, { targets: [`http://api.test:${up.port}`], discovery: { ...FAST, servers: [dns.address] } })
  t.equal((await gw.request('/')).statusCode, 200)

  await dns.stop()
  await waitFor(() => (names(gw)[0]?.failures ?? 0) >= 3, 5000, 'three failed lookups')
  const status = names(gw)[0]!
  t.same(status.addresses, [`127.0.0.1:${up.port}`], 'the last good set is kept')
  t.not(status.failingSince, null)
  t.type(status.lastError?.code, 'string')
  t.equal((await gw.request('/')).statusCode, 200, 'requests still go to the last good set')
  const warnings = gw.logs.filter((r) => r.name === 'api.test' && r.level === 40)
  t.equal(warnings.length, 1, 'one warning for the whole streak')
  t.match(warnings[0], { code: String, ms: Number, addresses: 1, msg: /looking up api\.test failed with \w+ after \d+ ms .*serving the last good set of 1 addresses/ })

  await dns.start()
  await waitFor(() => gw.logs.some((r) => r.name === 'api.test' && /resolves again/.test(r.msg)), 5000, 'the recovery record')
  t.equal(gw.logs.filter((r) => r.name === 'api.test' && /resolves again/.test(r.msg)).length, 1, 'one recovery record')
  t.equal(names(gw)[0]!.failingSince, null)
})

t.test('a name that does not resolve at start: the app starts, requests get dns_error with the code and lookup time', async (t) => {
  const dns = await startDns(t)
  dns.delay = 250
  const gw = await gateway(t, { targets: ['http://missing.test:8080'], discovery: { ...FAST, servers: [dns.address] } }, { status: {} })
  const res = await json(gw)
  t.equal(res.status, 502)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'dns_error' } })
  t.match(res.body, { error: 'dns_error', phase: 'dns', cause: 'ENOTFOUND', target: 'missing.test:8080', hint: /missing\.test does not resolve \(ENOTFOUND\).*after \d+ ms/ })
  const record = gw.failures()[0]!
  t.match(record, { error: 'dns_error', phase: 'dns', cause: 'ENOTFOUND', note: /lookup failed with ENOTFOUND after \d+ ms/ })
  const ms = Number(/after (\d+) ms/.exec(record.note as string)![1])
  t.ok(ms >= 200, `the slow lookup's time is in the record (${ms} ms)`)

  const report = (await json(gw, '/_upstream?format=json')).body as { diagnosis: Array<{ severity: string, title: string }>, pools: Array<{ dns: Array<{ lookupMs: number }> }> }
  t.ok(report.pools[0]!.dns[0]!.lookupMs >= 200, 'lookup time in the report')
  t.ok(report.diagnosis.some((f) => f.severity === 'critical' && /missing\.test does not resolve \(ENOTFOUND/.test(f.title)), 'a finding says the name does not resolve')
  t.ok(report.diagnosis.some((f) => /Looking up missing\.test took \d+ ms/.test(f.title)), 'a finding for the slow lookup')
  const metrics = await (await gw.request('/metrics')).body.text()
  const count = Number(/fastify_upstream_dns_lookup_seconds_count\{pool="p"\} (\d+)/.exec(metrics)?.[1])
  t.ok(count >= 1, `lookups are in the dns_lookup_seconds histogram (${count})`)
  t.match(metrics, /fastify_upstream_dns_lookup_seconds_bucket\{le="0.1",pool="p"\} 0/, 'the slow lookups fall above 100 ms')

  // Once it resolves, the pool serves.
  const up = await startUpstream('late')
  t.teardown(up.close)
  dns.delay = 0
  dns.set('missing.test', { a: ['127.0.0.1'], ttl: 0 })
  await gw.close()
  const gw2 = await gateway(t, { targets: [`http://missing.test:${up.port}`], discovery: { ...FAST, servers: [dns.address] } })
  t.equal((await gw2.request('/')).statusCode, 200)
})

t.test('a resolver that does not answer: dns_timeout after discovery.timeout', async (t) => {
  const dns = await startDns(t)
  dns.mode = 'silent'
  const started = Date.now()
  const gw = await gateway(t, { targets: ['http://quiet.test:8080'], discovery: { ...FAST, timeout: 300, servers: [dns.address] } })
  t.ok(Date.now() - started < 5000, 'the app started without waiting long')
  const res = await json(gw)
  t.equal(res.status, 504)
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'dns_timeout' } })
  t.match(res.body, { error: 'dns_timeout', cause: 'ETIMEOUT' })
})

t.test('SRV records become targets with their ports and weights; higher priorities are backups', async (t) => {
  const a = await startUpstream('a')
  const b = await startUpstream('b')
  t.teardown(async () => { await Promise.all([a.close(), b.close()]) })
  const dns = await startDns(t, {
    '_http._tcp.api.test': {
      srv: [
        { priority: 10, weight: 5, port: a.port, target: 'a.test' },
        { priority: 20, weight: 1, port: b.port, target: 'b.test' }
      ],
      ttl: 0
    },
    'a.test': { a: ['127.0.0.1'], ttl: 0 },
    'b.test': { a: ['127.0.0.1'], ttl: 0 }
  })
  const gw = await gateway(t, { targets: [{ srv: '_http._tcp.api.test' }], discovery: { ...FAST, servers: [dns.address] } })
  const list = targets(gw).sort((x, y) => x.weight - y.weight)
  t.match(list, [
    { url: `http://b.test:${b.port} (127.0.0.1)`, weight: 1, backup: true },
    { url: `http://a.test:${a.port} (127.0.0.1)`, weight: 5, backup: false }
  ])
  const res = await json(gw)
  t.equal(res.body.name, 'a', 'the primary record takes traffic')
  t.equal((res.body.headers as Record<string, string>).host, `a.test:${a.port}`, "Host is the record's target name")
})

t.test('localhost resolves through the system without discovery.servers', async (t) => {
  const up = await startUpstream('local')
  t.teardown(up.close)
  const gw = await gateway(t, { targets: [`http://localhost:${up.port}`] })
  const res = await json(gw)
  t.equal(res.status, 200)
  t.equal(res.body.name, 'local')
  t.equal(targets(gw)[0]!.address, '127.0.0.1')
  t.equal(names(gw)[0]!.via, 'system')
})

t.test('https to a resolved address checks the certificate against the name', { skip: opensslMissing ?? false }, async (t) => {
  const ca = await privateCa()
  if (ca === null) throw new Error('openssl is installed but could not make the certificates')
  // The certificate is for wrong.example only: it passes when SNI and the check use the name.
  const up = await startHttpsUpstream(ca.wrongName, (req, res) => { res.end(`hello ${req.headers.host ?? ''}`) })
  t.teardown(up.close)
  const dns = await startDns(t, { 'wrong.example': { a: ['127.0.0.1'], ttl: 0 } })
  const gw = await gateway(t, { targets: [`https://wrong.example:${up.port}`], tls: { ca: ca.ca }, discovery: { ...FAST, servers: [dns.address] } })
  const res = await gw.request('/')
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), `hello wrong.example:${up.port}`)
})

t.test('an IP-literal target asks no DNS; discovery.servers is checked at registration', async (t) => {
  const up = await startUpstream('ip')
  t.teardown(up.close)
  const dns: DnsServer = await startDns(t)
  const gw = await gateway(t, { targets: [up.url], discovery: { servers: [dns.address] } })
  t.equal((await gw.request('/')).statusCode, 200)
  t.same(names(gw), [], 'no name to resolve')
  t.equal(dns.queries.length, 0, 'no query was made')
  await t.rejects(gateway(t, { targets: [up.url], discovery: { servers: ['dns.example'] } }), { message: /pools\.p\.discovery\.servers\[0\]: expected a DNS server address/ })
  await t.rejects(gateway(t, { targets: [{ srv: '_http._tcp.x', weight: 2 } as never] }), { message: /pools\.p\.targets\[0\]\.weight: not for SRV targets/ })
})

t.test('refresh: a fixed interval looks names up on its own clock, whatever the TTL', async (t) => {
  const up = await startUpstream('up')
  t.teardown(up.close)
  const dns = await startDns(t, { 'api.test': { a: ['127.0.0.1'], ttl: 3600 } })
  const gw = await gateway(t, { targets: [`http://api.test:${up.port}`], discovery: { refresh: 100, servers: [dns.address] } })
  const before = dns.queries.length
  await waitFor(() => dns.queries.length >= before + 6, 3000, 'three more lookups despite a one-hour TTL')
  const status = names(gw)[0]!
  t.ok(Date.parse(status.nextRefresh!) - Date.parse(status.lastResolved!) <= 1000, 'the next lookup is the interval away, not the TTL')
})

t.test('discovery.family: which addresses of a dual-stack name become targets', async (t) => {
  const v4 = await startUpstream('v4')
  const v6 = await startUpstream('v6', undefined, { host: '::1', port: v4.port })
  t.teardown(async () => { await Promise.all([v4.close(), v6.close()]) })
  const dns = await startDns(t, { 'dual.test': { a: ['127.0.0.1'], aaaa: ['::1'], ttl: 60 }, 'six.test': { aaaa: ['::1'], ttl: 60 } })
  const cases: Array<[family: 'prefer-ipv4' | 'prefer-ipv6' | 'ipv4' | 'ipv6' | 'all' | undefined, addresses: string[]]> = [
    [undefined, ['127.0.0.1']],
    ['prefer-ipv4', ['127.0.0.1']],
    ['prefer-ipv6', ['::1']],
    ['ipv6', ['::1']],
    ['ipv4', ['127.0.0.1']],
    ['all', ['127.0.0.1', '::1']]
  ]
  for (const [family, addresses] of cases) {
    const gw = await gateway(t, { targets: [`http://dual.test:${v4.port}`], discovery: { servers: [dns.address], ...(family !== undefined ? { family } : {}) } })
    t.same(targets(gw).map((x) => x.address), addresses, `${family ?? 'the default'}: ${addresses.join(', ')}`)
    const answered = new Set<unknown>()
    for (let i = 0; i < 4; i++) answered.add((await json(gw)).body.name)
    t.same([...answered].sort(), addresses.map((a) => (a === '::1' ? 'v6' : 'v4')).sort(), 'and take the traffic')
    await gw.close()
  }
  // A name with none of the family asked for is a name that does not resolve.
  const gw = await gateway(t, { targets: [`http://six.test:${v4.port}`], discovery: { servers: [dns.address], family: 'ipv4' } })
  const failed = await json(gw)
  t.equal(failed.status, 502)
  t.match(failed.body, { error: 'dns_error' })
  t.match(names(gw)[0]!.lastError, { code: 'ENODATA' })
})

t.test('discovery.family is checked at registration', async (t) => {
  const { validateOptions } = await import('../lib/options/validate.js')
  t.throws(() => validateOptions({ pools: { p: { targets: ['http://api.test:80'], discovery: { family: 'v4' as never } } }, routes: [{ prefix: '/', pool: 'p' }] }),
    { message: /^pools\.p\.discovery\.family: expected one of/ })
})
