// The status report: every pool and target as they are now, with their rolling stats, the last
// example of each error type, and the diagnosis on top. The JSON answer is this object; the
// HTML page renders it.
import type { CacheSnapshot } from '../cache/caches.js'
import type { Config, StatusConfig } from '../options/config.js'
import type { PoolSnapshot, UpstreamPool } from '../pool/pool.js'
import type { TargetSnapshot } from '../pool/target.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { diagnose, type Finding, type PoolInput } from './diagnosis.js'
import type { ErrorExample, Recorder, TunnelCounts } from './recorder.js'
import type { RollingStats, WindowStats } from './stats.js'
import type { RateLimitStoreSnapshot } from '../proxy/rate-limit-store.js'
import type { StoryStoreSnapshot } from './story-store.js'

export interface Windows {
  '1m': WindowStats
  '5m': WindowStats
  '15m': WindowStats
}

export interface TargetReport extends TargetSnapshot {
  hostPort: string
  stats: Windows
  /** WebSocket tunnels to this target since the gateway started. */
  websockets: TunnelCounts
}

export interface PoolReport extends Omit<PoolSnapshot, 'targets'> {
  pending: number
  /** limits.maxPending and limits.maxConcurrent; null when unlimited (JSON has no Infinity). */
  maxPending: number | null
  maxConcurrent: number | null
  stats: Windows
  /** WebSocket tunnels to this pool since the gateway started. */
  websockets: TunnelCounts
  errors: Partial<Record<ProxyErrorType, ErrorExample>>
  targets: TargetReport[]
}

/** A route that chooses its pool (match, split) or mirrors: what it did since the gateway started. */
export interface RouteReport {
  prefix: string
  /** Requests per pool, by how the pool was chosen. */
  pools: Array<{ pool: string, match: number, split: number, route: number }>
  /** routes[].split as configured, in percent per pool (the rest go to the route's pool). */
  split: Record<string, number>
  /** Copies to the mirror pool, by outcome; null without a mirror. */
  mirror: { pool: string, percent: number, inFlight: number, answered: number, failed: number, skipped: number } | null
}

export interface StatusReport {
  at: string
  diagnosis: Finding[]
  pools: PoolReport[]
  /** Routes that choose a pool or mirror; the others serve their one pool. */
  routes: RouteReport[]
  /** The shared rate limit store (rateLimit.redis); null when there is none. */
  rateLimitStore: RateLimitStoreSnapshot | null
  /** The shared request story store (status.store); null when there is none. */
  storyStore: StoryStoreSnapshot | null
  /** Each caching route's cache (routes[].cache); absent when no route caches. */
  caches?: CacheSnapshot[]
}

/** The diagnosis reads the last five minutes: long enough to count, short enough to be news. */
const DIAGNOSIS_WINDOW = '5m'
const DIAGNOSIS_MINUTES = 5

export function buildReport (pools: ReadonlyMap<string, UpstreamPool>, recorder: Recorder, config: Config, status: StatusConfig, now = Date.now(), rateLimitStore: RateLimitStoreSnapshot | null = null, storyStore: StoryStoreSnapshot | null = null, mirrorsInFlight: (prefix: string) => number = () => 0): StatusReport {
  const reports: PoolReport[] = []
  const inputs: PoolInput[] = []
  for (const pool of pools.values()) {
    const stats = recorder.pool(pool.name)
    const snapshot = pool.snapshot()
    const targets = snapshot.targets.map((t, i): TargetReport => {
      const hostPort = pool.targets[i]!.hostPort
      return { ...t, hostPort, stats: windows(stats.target(hostPort), now), websockets: { ...stats.targetTunnel(hostPort) } }
    })
    const report: PoolReport = {
      name: snapshot.name,
      balancer: snapshot.balancer,
      panic: snapshot.panic,
      dns: snapshot.dns,
      pending: pool.pending,
      maxPending: finite(pool.config.limits.maxPending),
      maxConcurrent: finite(pool.config.limits.maxConcurrent),
      stats: windows(stats.stats, now),
      websockets: { ...stats.tunnels },
      errors: Object.fromEntries(stats.errors),
      targets
    }
    reports.push(report)
    inputs.push({
      pool: pool.name,
      stats: report.stats[DIAGNOSIS_WINDOW],
      targets: targets.map((t) => ({ target: t.hostPort, state: t.state, stats: t.stats[DIAGNOSIS_WINDOW], tlsMs: t.connections.tlsMs, why: t.why, consecutiveFailures: t.consecutiveFailures })),
      pending: report.pending,
      dns: pool.names().map((n) => ({
        name: n.label,
        addresses: n.endpoints.length,
        failingSince: n.failingSince === null ? null : new Date(n.failingSince).toISOString(),
        error: n.lastError?.code ?? null,
        lookupMs: n.lookupMs
      })),
      maxPending: pool.config.limits.maxPending,
      headersTimeout: headersTimeoutOf(config, pool.name),
      slow: {
        overAvg: stats.stats.countOver(now, DIAGNOSIS_MINUTES, status.diagnosis.avgLatency),
        overP99: stats.stats.countOver(now, DIAGNOSIS_MINUTES, status.diagnosis.p99Latency)
      },
      streak: { failed: stats.streak, errors: Object.fromEntries(stats.streakErrors), ...(stats.streak > 0 ? { since: new Date(stats.streakSince).toISOString() } : {}) },
      consecutiveFailures: pool.config.outlier?.consecutiveFailures ?? null,
      healthChecks: pool.config.health !== null
    })
  }
  return { at: new Date(now).toISOString(), diagnosis: diagnose(inputs, status.diagnosis, rateLimitStore, storyStore), pools: reports, routes: routeReports(config, recorder, mirrorsInFlight), rateLimitStore, storyStore }
}

function routeReports (config: Config, recorder: Recorder, mirrorsInFlight: (prefix: string) => number): RouteReport[] {
  const out: RouteReport[] = []
  for (const route of config.routes) {
    if (route.match.length === 0 && route.split.length === 0 && route.mirror === null) continue
    const counts = recorder.routes.get(route.prefix)
    let below = 0
    const split: Record<string, number> = {}
    for (const share of route.split) {
      split[share.pool] = (share.upTo - below) / 100
      below = share.upTo
    }
    const mirror = counts?.mirror ?? null
    out.push({
      prefix: route.prefix,
      pools: [...(counts?.pools ?? [])].map(([pool, by]) => ({ pool, ...by })),
      split,
      mirror: route.mirror === null
        ? null
        : { pool: route.mirror.pool, percent: route.mirror.percent, inFlight: mirrorsInFlight(route.prefix), answered: mirror?.answered ?? 0, failed: mirror?.failed ?? 0, skipped: mirror?.skipped ?? 0 }
    })
  }
  return out
}

function finite (n: number): number | null {
  return Number.isFinite(n) ? n : null
}

function windows (stats: RollingStats, now: number): Windows {
  return { '1m': stats.window(now, 1), '5m': stats.window(now, 5), '15m': stats.window(now, 15) }
}

/** The shortest timeouts.headers of the routes to a pool: the first to turn slowness into 504s. */
function headersTimeoutOf (config: Config, pool: string): number | false {
  let shortest: number | false = false
  for (const route of config.routes) {
    if (route.pool !== pool || route.timeouts.headers === false) continue
    if (shortest === false || route.timeouts.headers < shortest) shortest = route.timeouts.headers
  }
  return shortest
}

/**
 * A route's counts in words, one line each, for the HTML page and the text answer alike:
 * where its requests went and why, and what became of its mirror's copies.
 */
export function routeWords (route: RouteReport): string[] {
  const total = route.pools.reduce((sum, p) => sum + p.match + p.split + p.route, 0)
  const share = (n: number): string => total === 0 ? '0%' : `${Math.round((n / total) * 1000) / 10}%`
  const lines = route.pools.map(({ pool, match, split, route: plain }) => {
    const how = [match > 0 ? `${match} by match` : '', split > 0 ? `${split} by split` : '', plain > 0 ? `${plain} as the route's pool` : ''].filter((w) => w !== '').join(', ')
    const asked = route.split[pool] !== undefined ? ` (split asks ${route.split[pool]}%)` : ''
    return `${pool}: ${match + split + plain} requests, ${share(match + split + plain)} of ${total}${asked}${how !== '' ? `: ${how}` : ''}`
  })
  if (route.pools.length === 0 && (Object.keys(route.split).length > 0 || route.mirror === null)) lines.push('No requests routed yet.')
  const m = route.mirror
  if (m !== null) lines.push(`Mirror to ${m.pool} (${m.percent}% of requests): ${m.answered} copies answered, ${m.failed} failed, ${m.skipped} skipped (busy or body too large), ${m.inFlight} in flight`)
  return lines
}
