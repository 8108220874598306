// The diagnosis, the rolling stats and the histogram are pure: each finding is proved from
// synthetic numbers, without a socket.
import t from 'tap'
import { describeErrors, diagnose, type PoolInput, type TargetInput } from '../lib/observe/diagnosis.js'
import { RollingStats, type WindowStats } from '../lib/observe/stats.js'
import { bucketOf, newCounts, quantile, upperBound } from '../lib/observe/histogram.js'
import type { DiagnosisConfig } from '../lib/options/config.js'
import type { TargetState } from '../lib/pool/target.js'
import type { RateLimitStoreSnapshot } from '../lib/proxy/rate-limit-store.js'

const LIMITS: DiagnosisConfig = { avgLatency: 2000, p99Latency: 5000, queue: 0.8, errorRate: 0.01, outlier: 3, minRequests: 20, dnsLatency: 200, tlsLatency: 500 }

function stats (over: Partial<WindowStats> & { ms?: number, p99?: number } = {}): WindowStats {
  const ms = over.ms ?? 20
  return {
    minutes: 5,
    requests: 100,
    rate: 100 / 300,
    status5xx: 0,
    retried: 0,
    aborted: 0,
    errors: {},
    latency: { avg: ms, p50: ms, p95: ms, p99: over.p99 ?? ms },
    ...over
  }
}

function target (name: string, over: { state?: TargetState, stats?: WindowStats } = {}): TargetInput {
  return { target: name, state: over.state ?? 'healthy', stats: over.stats ?? stats() }
}

function pool (over: Partial<PoolInput> = {}): PoolInput {
  return {
    pool: 'api',
    stats: stats(),
    targets: [target('a:1'), target('b:1'), target('c:1')],
    pending: 0,
    maxPending: 100,
    headersTimeout: 30000,
    ...over
  }
}

t.test('a healthy pool has no findings', async (t) => {
  t.same(diagnose([pool()], LIMITS), [])
})

t.test('an average latency above 2 s names timeouts.headers and its value', async (t) => {
  const [finding, ...rest] = diagnose([pool({ stats: stats({ ms: 2500 }), headersTimeout: 3000 })], LIMITS)
  t.equal(rest.length, 0)
  t.equal(finding!.severity, 'warning')
  t.match(finding!.title, /2500 ms on average: risk of 504 before timeouts\.headers \(3000 ms\) bites/)
  t.match(finding!.action, /timeouts\.headers \(now 3000 ms\)/)
  t.equal(finding!.evidence.avgMs, 2500)
})

t.test('TLS handshakes slower than 500 ms on average name the target and connections.keepAlive', async (t) => {
  const slow = { ...target('b:443'), tlsMs: 740 }
  const findings = diagnose([pool({ targets: [{ ...target('a:443'), tlsMs: 12 }, slow, { ...target('c:443'), tlsMs: null }] })], LIMITS)
  t.equal(findings.length, 1)
  t.equal(findings[0]!.target, 'b:443')
  t.match(findings[0]!.title, /TLS handshakes with b:443 take 740 ms/)
  t.match(findings[0]!.action, /pools\.api\.connections\.keepAlive/)
  t.same(findings[0]!.evidence, { target: 'b:443', tlsMs: 740, thresholdMs: 500 })
  t.same(diagnose([pool({ targets: [{ ...target('a:443'), tlsMs: 499 }] })], LIMITS), [], 'under the threshold: nothing')
})

t.test('a p99 above 5 s is a finding of its own', async (t) => {
  const findings = diagnose([pool({ stats: stats({ ms: 100, p99: 6000 }) })], LIMITS)
  t.equal(findings.length, 1)
  t.equal(findings[0]!.title, 'Requests to pool "api" have a p99 of 6000 ms.')
  t.equal(findings[0]!.evidence.p99Ms, 6000)
  const [counted] = diagnose([pool({ stats: stats({ ms: 100, p99: 6000 }), slow: { overAvg: 1, overP99: 1 } })], LIMITS)
  t.equal(counted!.title, 'Requests to pool "api" have a p99 of 6000 ms; 1 of 100 requests took over 5 s.', 'with the count it rests on')
})

t.test('from the first requests: three answers of 2.1 s against a 3 s timeouts.headers are a finding with their count', async (t) => {
  const findings = diagnose([pool({ stats: stats({ requests: 3, ms: 2100 }), slow: { overAvg: 3, overP99: 0 }, headersTimeout: 3000 })], LIMITS)
  t.equal(findings.length, 1)
  t.equal(findings[0]!.title, 'Pool "api" answers in 2100 ms on average: risk of 504 before timeouts.headers (3000 ms) bites; 3 of 3 requests took over 2 s.')
  t.same(findings[0]!.evidence, { avgMs: 2100, p99Ms: 2100, requests: 3, overThreshold: 3, thresholdMs: 2000 })
})

t.test('from the first requests: 4 failures of 5 are a critical finding that names each cause', async (t) => {
  const few = stats({ requests: 5, status5xx: 4, errors: { connection_refused: 4 } })
  const [finding, ...rest] = diagnose([pool({ stats: few })], LIMITS)
  t.same(rest, [])
  t.equal(finding!.severity, 'critical')
  t.equal(finding!.title, '4 of 5 requests to pool "api" got a 5xx (80.0%): 4 errors, all connection_refused.')
  t.same(finding!.evidence, { status5xx: 4, requests: 5, connection_refused: 4, threshold: '1.0%' })
  const [one] = diagnose([pool({ stats: stats({ requests: 2, status5xx: 1, errors: { connection_terminated: 1 } }) })], LIMITS)
  t.equal(one!.severity, 'warning', 'one failure of two is said, not called critical')
  t.equal(one!.title, '1 of 2 requests to pool "api" got a 5xx (50.0%): 1 error: connection_terminated.')
})

t.test('a pool whose last requests all failed is a critical finding, whatever the volume', async (t) => {
  const findings = diagnose([pool({
    streak: { failed: 4, errors: { connection_refused: 1, http_response_timeout: 1, connection_terminated: 1, tls_certificate_error: 1 } },
    consecutiveFailures: 5,
    healthChecks: false
  })], LIMITS)
  t.equal(findings.length, 1)
  t.equal(findings[0]!.severity, 'critical')
  t.equal(findings[0]!.title, 'The last 4 requests to pool "api" all failed: 4 errors of 4 different types: connection_refused ×1, connection_terminated ×1, http_response_timeout ×1, tls_certificate_error ×1.')
  t.match(findings[0]!.action, /pools\.api\.outlier\.consecutiveFailures \(now 5\).*pools\.api\.health\.path/)
  t.same(diagnose([pool({ streak: { failed: 2, errors: { connection_refused: 2 } } })], LIMITS), [], 'two in a row are not yet a streak')
  const allOut = diagnose([pool({ targets: [target('a:1', { state: 'ejected' })], streak: { failed: 9, errors: { destination_unavailable: 9 } } })], LIMITS)
  t.equal(allOut.length, 1, 'with every target out, that finding explains the failures: said once')
})

t.test('a dead target the pool serves around is a finding with why, though retries hide it from clients', async (t) => {
  const dead = target('b:1', { state: 'ejected', stats: stats({ requests: 5, errors: { connection_refused: 5 }, latency: null }) })
  const findings = diagnose([pool({ stats: stats({ requests: 10, retried: 5 }), targets: [target('a:1'), { ...dead, consecutiveFailures: 5, why: 'ejected after 5 failures in a row, the last: connection_refused (ECONNREFUSED); back at 2026-12-02T04:09:00.000Z' }] })], LIMITS)
  t.equal(findings.length, 1)
  t.match(findings[0], {
    severity: 'warning',
    pool: 'api',
    target: 'b:1',
    title: 'b:1 of pool "api" is ejected: ejected after 5 failures in a row, the last: connection_refused (ECONNREFUSED); back at 2026-12-02T04:09:00.000Z.',
    evidence: { state: 'ejected', failedInARow: 5, connection_refused: 5 },
    action: /^The other targets serve meanwhile \(5 of 10 requests to the pool needed a retry\)\. Look at b:1 itself; .*pools\.api\.outlier\.ejectFor/
  })
  const [failing] = diagnose([pool({ targets: [target('a:1'), target('b:1', { state: 'failing' })], consecutiveFailures: 5 })], LIMITS)
  t.match(failing, { target: 'b:1', title: 'b:1 of pool "api" is failing.', action: /pools\.api\.outlier\.consecutiveFailures \(now 5\)/ })
  t.same(diagnose([pool({ targets: [target('a:1'), target('b:1', { state: 'draining' })] })], LIMITS), [], 'a drained target is the operator\'s choice')
})

t.test('several causes are said to be several', async (t) => {
  t.equal(describeErrors({ http_response_timeout: 1, connection_refused: 1, connection_terminated: 1, dns_error: 1 }), '4 errors of 4 different types: connection_refused ×1, connection_terminated ×1, dns_error ×1, http_response_timeout ×1')
  t.equal(describeErrors({ connection_refused: 3, http_response_timeout: 1 }), '4 errors of 2 different types: connection_refused ×3, http_response_timeout ×1')
  t.equal(describeErrors({ connection_refused: 3 }), '3 errors, all connection_refused')
  t.equal(describeErrors({ connection_refused: 1 }), '1 error: connection_refused')
})

t.test('a queue above 80% of limits.maxPending warns of 503s', async (t) => {
  const findings = diagnose([pool({ pending: 90, maxPending: 100 })], LIMITS)
  t.equal(findings.length, 1)
  t.match(findings[0]!.action, /limits\.maxPending \(now 100\)/)
  t.same(findings[0]!.evidence, { pending: 90, maxPending: 100, share: '90.0%' })
  t.same(diagnose([pool({ pending: 80, maxPending: 100 })], LIMITS), [], '80% exactly is not above')
})

t.test('a 5xx rate above 1% names the commonest error', async (t) => {
  const findings = diagnose([pool({ stats: stats({ status5xx: 5, errors: { connection_refused: 4, http_response_timeout: 1 } }) })], LIMITS)
  t.equal(findings.length, 1)
  t.equal(findings[0]!.title, '5 of 100 requests to pool "api" got a 5xx (5.0%): 5 errors of 2 different types: connection_refused ×4, http_response_timeout ×1.')
  t.equal(findings[0]!.severity, 'warning')
  t.equal(diagnose([pool({ stats: stats({ status5xx: 50 }) })], LIMITS)[0]!.severity, 'critical', 'above 10% is critical')
})

t.test('one target much slower than its peers is "one slow node"', async (t) => {
  const findings = diagnose([pool({ targets: [target('a:1'), target('b:1', { stats: stats({ ms: 900 }) }), target('c:1', { stats: stats({ ms: 30 }) })] })], LIMITS)
  t.equal(findings.length, 1)
  t.equal(findings[0]!.target, 'b:1')
  t.match(findings[0]!.title, /b:1 is much slower than the rest of pool "api" \(one slow node\)/)
  t.same(findings[0]!.evidence, { p95Ms: 900, peersP95Ms: 25, requests: 100 })
})

t.test('one target failing more than its peers is named', async (t) => {
  const failing = stats({ errors: { connection_terminated: 10 } })
  const findings = diagnose([pool({ targets: [target('a:1'), target('b:1'), target('c:1', { stats: failing })] })], LIMITS)
  t.equal(findings.length, 1)
  t.equal(findings[0]!.target, 'c:1')
  t.match(findings[0]!.title, /c:1 fails 10\.0% of its requests/)
  t.match(findings[0]!.action, /outlier\.consecutiveFailures/)
})

t.test('a pool with no target in rotation is critical and listed first', async (t) => {
  const findings = diagnose([
    pool({ pool: 'slow', stats: stats({ ms: 2500 }) }),
    pool({ pool: 'dead', targets: [target('a:1', { state: 'unhealthy' }), target('b:1', { state: 'ejected' })] })
  ], LIMITS)
  t.equal(findings.length, 2)
  t.equal(findings[0]!.severity, 'critical')
  t.equal(findings[0]!.pool, 'dead')
  t.equal(findings[0]!.title, 'Every target of pool "dead" is out of rotation (1 unhealthy, 1 ejected): requests get 503.')
  t.same(findings[0]!.evidence, { 'a:1': 'unhealthy', 'b:1': 'ejected' })
})

t.test('an unreachable rate limit store is a finding: a warning when failing open, critical when closed', async (t) => {
  const store: RateLimitStoreSnapshot = { state: 'ok', since: '2026-01-01T00:00:00.000Z', onStoreError: 'allow', lastError: null, errors: 0, outages: 0 }
  t.same(diagnose([pool()], LIMITS, store), [], 'a store that answers says nothing')
  const down = { ...store, state: 'unreachable' as const, lastError: 'connect ECONNREFUSED 127.0.0.1:6379', errors: 42, outages: 1 }
  const [open, ...rest] = diagnose([pool()], LIMITS, down)
  t.same(rest, [])
  t.match(open, {
    severity: 'warning',
    title: 'The rate limit store (Redis) is unreachable since 2026-01-01T00:00:00.000Z: failing open, requests pass without a limit.',
    evidence: { since: down.since, errors: 42, lastError: down.lastError, onStoreError: 'allow' },
    action: /rateLimit\.redis.*onStoreError "deny"/
  })
  t.equal(open!.pool, undefined, 'it is about the gateway, not a pool')
  const findings = diagnose([pool({ pool: 'slow', stats: stats({ ms: 2500 }) })], LIMITS, { ...down, onStoreError: 'deny' })
  t.equal(findings.length, 2)
  t.match(findings[0], { severity: 'critical', title: /failing closed, rate-limited requests get 503/, action: /onStoreError "allow"/ })
})

t.test('thresholds are configurable', async (t) => {
  t.equal(diagnose([pool({ stats: stats({ ms: 600 }) })], { ...LIMITS, avgLatency: 500 }).length, 1)
})

t.test('a name whose re-resolution fails while a good set serves is a warning with the streak and the set', async (t) => {
  const findings = diagnose([pool({ dns: [{ name: 'api.internal', addresses: 3, failingSince: '2026-01-01T10:00:00.000Z', error: 'ESERVFAIL', lookupMs: 12 }] })], LIMITS)
  t.equal(findings.length, 1)
  t.match(findings[0], {
    severity: 'warning',
    pool: 'api',
    title: 'DNS re-resolution failing for api.internal since 2026-01-01T10:00:00.000Z (ESERVFAIL), serving the last good set of 3 addresses.',
    evidence: { name: 'api.internal', error: 'ESERVFAIL', addresses: 3, lookupMs: 12 },
    action: /discovery\.servers.*discovery\.maxTtl/
  })
})

t.test('a name that never resolved is critical and names the error clients get', async (t) => {
  const [nx] = diagnose([pool({ targets: [], dns: [{ name: 'missing.internal', addresses: 0, failingSince: '2026-01-01T10:00:00.000Z', error: 'ENOTFOUND', lookupMs: 3 }] })], LIMITS)
  t.match(nx, { severity: 'critical', title: /missing\.internal does not resolve \(ENOTFOUND since .*\): requests that need it get dns_error/ })
  const [timeout] = diagnose([pool({ targets: [], dns: [{ name: 'quiet.internal', addresses: 0, failingSince: '2026-01-01T10:00:00.000Z', error: 'ETIMEOUT', lookupMs: 2000 }] })], { ...LIMITS, dnsLatency: 5000 })
  t.match(timeout, { severity: 'critical', title: /get dns_timeout/ })
})

t.test('a DNS lookup slower than status.diagnosis.dnsLatency is a finding; a healthy name is none', async (t) => {
  const ok = { name: 'api.internal', addresses: 2, failingSince: null, error: null }
  t.same(diagnose([pool({ dns: [{ ...ok, lookupMs: 150 }] })], LIMITS), [], 'under 200 ms: nothing to say')
  const [slow] = diagnose([pool({ dns: [{ ...ok, lookupMs: 450 }] })], LIMITS)
  t.match(slow, { severity: 'info', title: 'Looking up api.internal took 450 ms.', evidence: { lookupMs: 450, thresholdMs: 200 } })
  t.equal(diagnose([pool({ dns: [{ ...ok, lookupMs: 450 }] })], { ...LIMITS, dnsLatency: 500 }).length, 0, 'the threshold is configurable')
})

t.test('the histogram reads percentiles within one bucket (9%) above the truth', async (t) => {
  const counts = newCounts()
  for (let ms = 1; ms <= 1000; ms++) counts[bucketOf(ms)]!++
  for (const [q, truth] of [[0.5, 500], [0.95, 950], [0.99, 990]] as const) {
    const got = quantile(counts, 1000, q)!
    t.ok(got >= truth && got <= truth * 1.1, `p${q * 100} ${got} near ${truth}`)
  }
  t.equal(quantile(counts, 0, 0.5), null)
  t.equal(bucketOf(0), 0)
  t.ok(upperBound(bucketOf(10 * 60_000)) >= 10 * 60_000, 'ten minutes fit')
})

t.test('rolling stats keep sliding 1, 5 and 15 minute windows and forget older slots', async (t) => {
  const start = 1_700_000_000_000 - (1_700_000_000_000 % 60_000)
  const s = new RollingStats([], start)
  for (let minute = 0; minute < 20; minute++) {
    for (let i = 0; i < 10; i++) s.record(start + minute * 60_000 + i, 100, i === 0 ? 502 : 200, i === 0 ? 'connection_refused' : null, i === 1)
  }
  const now = start + 19 * 60_000 + 30_000
  const one = s.window(now, 1)
  t.equal(one.requests, 10)
  t.equal(one.status5xx, 1)
  t.equal(one.retried, 1)
  t.same(one.errors, { connection_refused: 1 })
  t.equal(one.rate, 10 / 60, 'the rate is over the last 60 s')
  t.equal(s.window(now, 5).requests, 50)
  t.equal(s.window(now, 15).requests, 150)
  t.ok(Math.abs(s.window(now, 15).latency!.avg - 100) < 1e-9)
  t.equal(s.window(now + 15 * 60_000, 15).requests, 0, 'a quiet quarter of an hour empties every window')
})

t.test('"1 min" is the last 60 seconds: requests just before a minute boundary still count after it', async (t) => {
  // 10 requests at 04:08:37, read at 04:08:39, 04:09:02 (the next calendar minute) and later.
  const at = Date.parse('2026-12-02T04:08:37.000Z')
  const s = new RollingStats([], at - 3_600_000)
  for (let i = 0; i < 10; i++) s.record(at + i, 50, 200, null, false)
  t.equal(s.window(at + 2_000, 1).requests, 10, 'two seconds later')
  t.equal(s.window(Date.parse('2026-12-02T04:09:02.000Z'), 1).requests, 10, 'across the minute boundary')
  t.equal(s.window(Date.parse('2026-12-02T04:09:36.000Z'), 1).requests, 10, '59 s later')
  t.equal(s.window(Date.parse('2026-12-02T04:09:50.000Z'), 1).requests, 0, 'gone once they are more than a minute (and a slot) old')
  t.equal(s.window(Date.parse('2026-12-02T04:09:50.000Z'), 5).requests, 10, 'still in the 5 minute window')
  t.equal(s.window(Date.parse('2026-12-02T04:13:30.000Z'), 5).requests, 10)
  t.equal(s.window(Date.parse('2026-12-02T04:13:50.000Z'), 5).requests, 0)
  t.equal(s.window(Date.parse('2026-12-02T04:23:30.000Z'), 15).requests, 10)
  t.equal(s.window(Date.parse('2026-12-02T04:23:50.000Z'), 15).requests, 0)
})

t.test('requests over a diagnosis threshold are counted exactly; others from the histogram, erring low', async (t) => {
  const now = 1_700_000_000_000
  const s = new RollingStats([2000], now - 60_000)
  for (const ms of [2001, 2100, 1999, 2000, 6000]) s.record(now, ms, 200, null, false)
  t.equal(s.countOver(now, 5, 2000), 3, 'exactly those over 2000 ms')
  t.equal(s.countOver(now, 5, 5000), 1, 'a value that is no mark: from the histogram')
  t.equal(s.countOver(now, 5, 1), 5)
})

t.test('recording allocates nothing per request once a slot exists', async (t) => {
  const now = 1_700_000_000_000
  const s = new RollingStats([2000, 5000], now)
  s.record(now, 10, 502, 'connection_refused', false)
  // Warm the code, then a long run of records in the same slot: the heap stays flat.
  for (let i = 0; i < 1e5; i++) s.record(now + 1, 10 + (i % 3000), i % 7 === 0 ? 502 : 200, i % 7 === 0 ? 'connection_refused' : null, false)
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < 1e6; i++) s.record(now + 2, 10 + (i % 3000), i % 7 === 0 ? 502 : 200, i % 7 === 0 ? 'connection_refused' : null, false)
  const grown = process.memoryUsage().heapUsed - before
  // The smallest object is 16 bytes: one per record would be 16 MB. What is left is the runner's.
  t.ok(grown < 4_000_000, `a million records grew the heap by ${grown} bytes`)
})
