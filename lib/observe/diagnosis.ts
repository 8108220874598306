// The status page's diagnosis: a pure function from a pool's numbers (rolling stats, target
// states, queue depth) and the options in force to findings in plain words. Each finding
// carries its evidence and names the option to change with its current value. It speaks from
// the first requests: thresholds hold at any volume, and a title says the counts it rests on
// ("3 of 3 requests took over 2 s"); only comparing a target with its peers waits for volume.
import type { DiagnosisConfig } from '../options/config.js'
import type { TargetState } from '../pool/target.js'
import type { WindowStats } from './stats.js'
import type { RateLimitStoreSnapshot } from '../proxy/rate-limit-store.js'
import type { StoryStoreSnapshot } from './story-store.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { classifyLookupFailure } from '../errors/classify.js'

export type Severity = 'critical' | 'warning' | 'info'

export interface Finding {
  severity: Severity
  /** The pool it is about; absent for the gateway's own parts (the rate limit store). */
  pool?: string
  target?: string
  title: string
  /** The numbers the finding rests on. */
  evidence: Record<string, number | string>
  /** What to do, naming the option and its current value. */
  action: string
}

export interface TargetInput {
  /** `host:port`. */
  target: string
  state: TargetState
  stats: WindowStats
  /** Recent average TLS handshake of new connections, in ms; absent or null when none was timed. */
  tlsMs?: number | null
  /** Why it is in its state, in words (the page's "why"); absent or null for a healthy target. */
  why?: string | null
  /** Its tries that failed in a row, retried ones included (the window counts answers only). */
  consecutiveFailures?: number
}

/** A target given by name: how its lookups go. */
export interface DnsInput {
  /** The name looked up (host name or SRV name). */
  name: string
  /** Addresses in use: the last good set while lookups fail. */
  addresses: number
  /** ISO time the current streak of failed lookups began; null while lookups succeed. */
  failingSince: string | null
  /** The last failed lookup's code (`ENOTFOUND`, `ETIMEOUT`...). */
  error: string | null
  /** How long the last lookup took. */
  lookupMs: number | null
}

export interface PoolInput {
  pool: string
  stats: WindowStats
  targets: TargetInput[]
  /** Targets given by name; absent or empty when every target is an IP. */
  dns?: DnsInput[]
  /** Requests waiting for room now, and the pool's limits. */
  pending: number
  maxPending: number
  /** The shortest timeouts.headers among the pool's routes, in ms; false when off everywhere. */
  headersTimeout: number | false
  /** Requests in the window that took more than `avgLatency` and more than `p99Latency`. */
  slow?: { overAvg: number, overP99: number }
  /** The pool's last requests, all failed (reset by any answer that was not a failure), by type. */
  streak?: { failed: number, errors: Partial<Record<ProxyErrorType, number>>, since?: string }
  /** outlier.consecutiveFailures, or null with outlier detection off. */
  consecutiveFailures?: number | null
  /** Whether active health checks run (health.path). */
  healthChecks?: boolean
}

/** A pool whose last requests, at least this many, all failed is a finding at any volume. */
export const FAILED_STREAK = 3

const OUT: ReadonlySet<TargetState> = new Set(['unhealthy', 'ejected', 'draining'])
const SEVERITY_ORDER: Record<Severity, number> = { critical: 0, warning: 1, info: 2 }

const ms = (n: number): number => Math.round(n)
const pct = (n: number): string => `${(n * 100).toFixed(1)}%`

export function diagnose (pools: readonly PoolInput[], limits: DiagnosisConfig, rateLimitStore: RateLimitStoreSnapshot | null = null, storyStore: StoryStoreSnapshot | null = null): Finding[] {
  const findings: Finding[] = []
  if (rateLimitStore !== null) diagnoseRateLimitStore(rateLimitStore, findings)
  if (storyStore !== null) diagnoseStoryStore(storyStore, findings)
  for (const p of pools) diagnosePool(p, limits, findings)
  return findings.sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity])
}

function diagnosePool (p: PoolInput, limits: DiagnosisConfig, out: Finding[]): void {
  const pool = p.pool
  const primaries = p.targets.filter((t) => t.state !== 'backup')
  const allOut = p.targets.length > 0 && p.targets.every((t) => OUT.has(t.state))
  if (allOut) {
    out.push({
      severity: 'critical',
      pool,
      title: `Every target of pool "${pool}" is out of rotation (${countStates(p.targets)}): requests get 503.`,
      evidence: Object.fromEntries(p.targets.map((t) => [t.target, t.state])),
      action: `Bring a target back (check why each is out on this page), or add targets to pools.${pool}.targets.`
    })
  } else if (primaries.length > 0 && primaries.every((t) => OUT.has(t.state))) {
    out.push({
      severity: 'warning',
      pool,
      title: `Every primary target of pool "${pool}" is out: traffic goes to backups.`,
      evidence: Object.fromEntries(primaries.map((t) => [t.target, t.state])),
      action: `Bring a primary target of pools.${pool}.targets back into rotation.`
    })
  }

  if (!allOut) for (const t of p.targets) targetOut(p, t, out)

  // Said once: with every target out, the failures are the 503s that finding explains.
  const streak = p.streak
  if (!allOut && streak !== undefined && streak.failed >= FAILED_STREAK) {
    out.push({
      severity: 'critical',
      pool,
      title: `The last ${streak.failed} requests to pool "${pool}" all failed: ${describeErrors(streak.errors)}.`,
      // A streak outlives the window (no success has ended it): `since` says how old it is.
      evidence: { failedInARow: streak.failed, ...(streak.since !== undefined ? { since: streak.since } : {}), ...streak.errors },
      action: `Open the last example of each error below (its request id links to the whole story); ${removalAdvice(p)}`
    })
  }

  if (p.maxPending > 0 && p.pending > limits.queue * p.maxPending) {
    out.push({
      severity: 'warning',
      pool,
      title: `Pool "${pool}" has ${p.pending} requests waiting for room, of ${p.maxPending} allowed: near the point where new ones get 503.`,
      evidence: { pending: p.pending, maxPending: p.maxPending, share: pct(p.pending / p.maxPending) },
      action: `Add targets, or raise limits.maxConcurrent or limits.maxPending (now ${p.maxPending}) for pool "${pool}" if the targets can take more.`
    })
  }

  const s = p.stats
  if (s.latency !== null) {
    const of = (n: number | undefined, over: number): string => n === undefined ? '' : `; ${n} of ${requestsWord(s.requests)} took over ${seconds(over)}`
    if (s.latency.avg > limits.avgLatency) {
      out.push({
        severity: 'warning',
        pool,
        title: p.headersTimeout !== false
          ? `Pool "${pool}" answers in ${ms(s.latency.avg)} ms on average: risk of 504 before timeouts.headers (${p.headersTimeout} ms) bites${of(p.slow?.overAvg, limits.avgLatency)}.`
          : `Pool "${pool}" answers in ${ms(s.latency.avg)} ms on average${of(p.slow?.overAvg, limits.avgLatency)}.`,
        evidence: { avgMs: ms(s.latency.avg), p99Ms: ms(s.latency.p99), requests: s.requests, ...(p.slow !== undefined ? { overThreshold: p.slow.overAvg } : {}), thresholdMs: limits.avgLatency },
        action: p.headersTimeout !== false
          ? `Find what makes the targets slow; raise timeouts.headers (now ${p.headersTimeout} ms) only if answers this slow are expected.`
          : 'Find what makes the targets slow; timeouts.headers is off, so clients wait as long as the targets take.'
      })
    }
    if (s.latency.p99 > limits.p99Latency) {
      out.push({
        severity: 'warning',
        pool,
        title: `Requests to pool "${pool}" have a p99 of ${ms(s.latency.p99)} ms${of(p.slow?.overP99, limits.p99Latency)}.`,
        evidence: { p99Ms: ms(s.latency.p99), p95Ms: ms(s.latency.p95), requests: s.requests, ...(p.slow !== undefined ? { overThreshold: p.slow.overP99 } : {}), thresholdMs: limits.p99Latency },
        action: `Look for slow queries or saturated workers behind pool "${pool}"; timeouts.headers is ${p.headersTimeout === false ? 'off' : `${p.headersTimeout} ms`}.`
      })
    }
  }
  if (s.status5xx > 0 && s.status5xx / s.requests > limits.errorRate) {
    const failures = sum(s.errors)
    const upstream = s.status5xx - failures
    const causes = [
      ...(failures > 0 ? [describeErrors(s.errors)] : []),
      ...(upstream > 0 ? [`${upstream} ${upstream === 1 ? 'was' : 'were'} the upstream's own 5xx`] : [])
    ].join('; ')
    // A handful of requests is enough to say so; critical takes a few failures, not one blip.
    const many = s.requests >= limits.minRequests || s.status5xx >= FAILED_STREAK
    out.push({
      severity: many && s.status5xx / s.requests > 0.1 ? 'critical' : 'warning',
      pool,
      title: `${s.status5xx} of ${requestsWord(s.requests)} to pool "${pool}" got a 5xx (${pct(s.status5xx / s.requests)})${causes !== '' ? `: ${causes}` : ''}.`,
      evidence: { status5xx: s.status5xx, requests: s.requests, ...s.errors, threshold: pct(limits.errorRate) },
      action: 'Open the last example of each error below (its request id links to the whole story); the failure type names what to fix.'
    })
  }
  oneSlowNode(p, limits, out)
  for (const name of p.dns ?? []) diagnoseName(pool, name, limits, out)
  for (const t of p.targets) slowHandshake(pool, t, limits, out)
}

/**
 * One target out of rotation (ejected, unhealthy) or failing while the pool still serves:
 * retries hide it from clients, so without this finding nothing on top of the page would say
 * a target is dead. Drained targets are an operator's choice, not news.
 */
function targetOut (p: PoolInput, t: TargetInput, out: Finding[]): void {
  if (t.state !== 'ejected' && t.state !== 'unhealthy' && t.state !== 'failing') return
  const retried = p.stats.retried > 0 ? ` (${p.stats.retried} of ${requestsWord(p.stats.requests)} to the pool needed a retry)` : ''
  const action = t.state === 'ejected'
    ? `The other targets serve meanwhile${retried}. Look at ${t.target} itself; it gets a request again when its ejection ends (pools.${p.pool}.outlier.ejectFor, doubling each time).`
    : t.state === 'unhealthy'
      ? `The other targets serve meanwhile. Look at ${t.target} and what it answers on pools.${p.pool}.health.path; it returns after health.healthyAfter passing checks.`
      : `Requests still reach it${retried}. Look at ${t.target}'s own log; ${removalAdvice(p)}`
  out.push({
    severity: 'warning',
    pool: p.pool,
    target: t.target,
    title: `${t.target} of pool "${p.pool}" is ${t.state}${t.why != null ? `: ${t.why}` : ''}.`,
    evidence: { state: t.state, ...(t.consecutiveFailures !== undefined ? { failedInARow: t.consecutiveFailures } : {}), ...t.stats.errors },
    action
  })
}

/**
 * The errors of a count, in words that say how many kinds there are: "4 errors of 4 different
 * types: a ×1, b ×1, …", "3 errors, all connection_refused", "1 error: connection_refused".
 */
export function describeErrors (errors: Partial<Record<ProxyErrorType, number>>): string {
  const kinds = Object.entries(errors).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
  const total = kinds.reduce((n, [, k]) => n + k, 0)
  if (kinds.length === 0) return 'no error recorded'
  if (kinds.length === 1) return total === 1 ? `1 error: ${kinds[0]![0]}` : `${total} errors, all ${kinds[0]![0]}`
  return `${total} errors of ${kinds.length} different types: ${kinds.map(([type, n]) => `${type} ×${n}`).join(', ')}`
}

/** How the gateway could have taken a dead target out sooner, naming the options and values. */
function removalAdvice (p: PoolInput): string {
  const outlier = p.consecutiveFailures === undefined
    ? 'outlier.consecutiveFailures ejects a target that keeps failing'
    : p.consecutiveFailures === null
      ? `pools.${p.pool}.outlier is off, so a target that keeps failing stays in rotation`
      : `pools.${p.pool}.outlier.consecutiveFailures (now ${p.consecutiveFailures}) ejects a target after that many failures in a row`
  const health = p.healthChecks === true ? '' : `; set pools.${p.pool}.health.path so a dead target leaves rotation before requests reach it`
  return `${outlier}${health}.`
}

function countStates (targets: readonly TargetInput[]): string {
  const counts = new Map<string, number>()
  for (const t of targets) counts.set(t.state, (counts.get(t.state) ?? 0) + 1)
  return [...counts].map(([state, n]) => `${n} ${state}`).join(', ')
}

function requestsWord (n: number): string {
  return n === 1 ? '1 request' : `${n} requests`
}

function seconds (msValue: number): string {
  return msValue % 1000 === 0 ? `${msValue / 1000} s` : `${msValue} ms`
}

function sum (errors: Partial<Record<ProxyErrorType, number>>): number {
  let n = 0
  for (const k of Object.values(errors)) n += k
  return n
}

/** The shared request story store does not answer: lookups see this instance's stories only. */
function diagnoseStoryStore (store: StoryStoreSnapshot, out: Finding[]): void {
  if (store.state === 'ok') return
  out.push({
    severity: 'warning',
    title: `The request story store (Redis) is unreachable since ${store.since}: each instance keeps and finds only its own request stories.`,
    evidence: { since: store.since, errors: store.errors, lastError: store.lastError ?? '?' },
    action: 'Bring Redis back or fix the gateway\'s way to it (status.store); a request id quoted from another instance\'s error page is not found here meanwhile.'
  })
}

/** TLS handshakes slow enough that every new connection adds a visible delay. */
function slowHandshake (pool: string, t: TargetInput, limits: DiagnosisConfig, out: Finding[]): void {
  if (t.tlsMs == null || t.tlsMs <= limits.tlsLatency) return
  out.push({
    severity: 'warning',
    pool,
    target: t.target,
    title: `TLS handshakes with ${t.target} take ${ms(t.tlsMs)} ms: each new connection delays its request by that much.`,
    evidence: { target: t.target, tlsMs: ms(t.tlsMs), thresholdMs: limits.tlsLatency },
    action: `Check the target's TLS terminator (CPU, key size, OCSP); keep connections open longer (pools.${pool}.connections.keepAlive) so fewer handshakes are needed.`
  })
}

/** A name that stopped resolving (or never did), and lookups slow enough to matter. */
function diagnoseName (pool: string, d: DnsInput, limits: DiagnosisConfig, out: Finding[]): void {
  if (d.failingSince !== null) {
    const evidence = { name: d.name, error: d.error ?? 'unknown', since: d.failingSince, addresses: d.addresses, ...(d.lookupMs !== null ? { lookupMs: d.lookupMs } : {}) }
    const action = `Check that the resolver answers for ${d.name} (pools.${pool}.discovery.servers, or the system's); the gateway keeps retrying, at least every discovery.maxTtl.`
    out.push(d.addresses > 0
      ? {
          severity: 'warning',
          pool,
          title: `DNS re-resolution failing for ${d.name} since ${d.failingSince} (${d.error ?? 'unknown'}), serving the last good set of ${d.addresses} addresses.`,
          evidence,
          action
        }
      : {
          severity: 'critical',
          pool,
          title: `${d.name} does not resolve (${d.error ?? 'unknown'} since ${d.failingSince}): requests that need it get ${classifyLookupFailure(d.error)}.`,
          evidence,
          action: `Check the name in pools.${pool}.targets and that the resolver (pools.${pool}.discovery.servers, or the system's) knows it; the gateway keeps retrying, at least every discovery.maxTtl.`
        })
  }
  if (d.lookupMs !== null && d.lookupMs > limits.dnsLatency) {
    out.push({
      severity: 'info',
      pool,
      title: `Looking up ${d.name} took ${ms(d.lookupMs)} ms.`,
      evidence: { name: d.name, lookupMs: ms(d.lookupMs), thresholdMs: limits.dnsLatency },
      action: 'Lookups run in the background, off the request path, but a slow resolver delays following address changes and the first lookup at start; check the resolver (or set discovery.servers to a nearer one).'
    })
  }
}

/**
 * A shared rate limit store that does not answer: limits are off (fail open), or every limited
 * request is refused (fail closed), until it does.
 */
function diagnoseRateLimitStore (store: RateLimitStoreSnapshot, out: Finding[]): void {
  if (store.state === 'ok') return
  const open = store.onStoreError === 'allow'
  out.push({
    severity: open ? 'warning' : 'critical',
    title: open
      ? `The rate limit store (Redis) is unreachable since ${store.since}: failing open, requests pass without a limit.`
      : `The rate limit store (Redis) is unreachable since ${store.since}: failing closed, rate-limited requests get 503.`,
    evidence: { since: store.since, errors: store.errors, lastError: store.lastError ?? '?', onStoreError: store.onStoreError },
    action: open
      ? 'Bring Redis back or fix the gateway\'s way to it (rateLimit.redis); meanwhile each instance lets every request through. Set rateLimit.onStoreError "deny" if an unlimited request costs more than a refused one.'
      : 'Bring Redis back or fix the gateway\'s way to it (rateLimit.redis). Set rateLimit.onStoreError "allow" to let requests through while it is down.'
  })
}

/** One target much slower, or failing much more, than its peers (the rest of the pool). */
function oneSlowNode (p: PoolInput, limits: DiagnosisConfig, out: Finding[]): void {
  const judged = p.targets.filter((t) => t.stats.requests >= limits.minRequests && t.stats.latency !== null)
  if (judged.length < 2) return
  for (const t of judged) {
    const peers = judged.filter((o) => o !== t)
    const peerP95 = median(peers.map((o) => o.stats.latency!.p95))
    const p95 = t.stats.latency!.p95
    // A floor of 50 ms: 3 ms against 1 ms is no finding.
    if (p95 > limits.outlier * peerP95 && p95 - peerP95 > 50) {
      out.push({
        severity: 'warning',
        pool: p.pool,
        target: t.target,
        title: `${t.target} is much slower than the rest of pool "${p.pool}" (one slow node).`,
        evidence: { p95Ms: ms(p95), peersP95Ms: ms(peerP95), requests: t.stats.requests },
        action: `Look at ${t.target} itself (load, disk, GC, a noisy neighbour); drain it meanwhile with app.upstream.drain('${p.pool}', url), or use balancer p2c-ewma, which sends less to a slow target.`
      })
    }
    const rate = failureRate(t.stats)
    const peerRate = median(peers.map((o) => failureRate(o.stats)))
    if (rate > limits.errorRate && rate > limits.outlier * peerRate) {
      out.push({
        severity: 'warning',
        pool: p.pool,
        target: t.target,
        title: `${t.target} fails ${pct(rate)} of its requests, more than the rest of pool "${p.pool}" (${pct(peerRate)}).`,
        evidence: { failureRate: pct(rate), peersFailureRate: pct(peerRate), requests: t.stats.requests },
        action: `Look at ${t.target}'s own log; set outlier.consecutiveFailures lower, or health.path, so the gateway takes it out sooner.`
      })
    }
  }
}

function failureRate (s: WindowStats): number {
  let failed = 0
  for (const n of Object.values(s.errors)) failed += n
  return s.requests === 0 ? 0 : failed / s.requests
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
