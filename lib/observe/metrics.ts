// Prometheus metrics with prom-client, in a registry of the gateway's own unless the app gives
// its own (so they join its existing /metrics). Labels stay bounded: pool, target (`host:port`
// from the configuration), error type, blame, status class; never the URL.
//
// The success path counts into plain numbers kept per pool and target (`Series`), and the
// metrics read them at scrape time: prom-client's own label children validate and hash their
// labels on every inc() and observe(), three times per request. Failures and retries are rare
// and go through prom-client as they happen.
import { Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client'
import type { Failure } from '../errors/failure.js'
import type { UpstreamPool } from '../pool/pool.js'
import { entry, type Ending, type RouteCounts, type TunnelEvent } from './records.js'
import type { StoryStore } from './story-store.js'
import type { Caches, CacheSnapshot } from '../cache/caches.js'
import type { CacheCounts } from '../cache/cache.js'
import type { StoreHealth } from '../proxy/rate-limit-store.js'

const PREFIX = 'fastify_upstream_'
const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const
/** Seconds: from a cache hit to a request that waits out a long timeouts.headers. */
export const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

/** Observations of one histogram series: a count per bucket of BUCKETS (+Inf last), their sum. */
export class Observed {
  readonly counts = new Float64Array(BUCKETS.length + 1)
  sum = 0
  count = 0

  reset (): void {
    this.counts.fill(0)
    this.sum = 0
    this.count = 0
  }

  observe (value: number): void {
    let i = 0
    while (i < BUCKETS.length && value > BUCKETS[i]!) i++
    this.counts[i]!++
    this.sum += value
    this.count++
  }
}

/** What one pool and target have recorded, read at scrape time. */
export interface Series {
  labels: { pool: string, target: string }
  /** Requests per status class, 1xx to 5xx. */
  requests: Float64Array
  total: Observed
  headers: Observed
}

/**
 * A prom-client Histogram whose values are read from the series at scrape time; its output is
 * prom-client's own (the same lines, `le` buckets cumulative, then _sum and _count).
 *
 * prom-client has no public way to hand a histogram counts kept elsewhere, so this leans on
 * how prom-client 15.1.3 reads a metric, which its documentation does not promise:
 * `Registry.metrics()` (the text output) calls a metric's `getForPromString()` when it has one,
 * else `get()`; `getMetricsAsJSON()` calls `get()`; `resetMetrics()` calls `reset()`, and so
 * does the Metric constructor, before a subclass's fields exist. Both reads are overridden.
 * test/metrics-prom-client.test.ts compares this with prom-client's own Histogram fed the same
 * observations, through each of those: on a release that reads metrics another way, it fails.
 */
export class SeriesHistogram extends Histogram<string> {
  readonly #name: string
  readonly #help: string

  constructor (name: string, help: string, registers: Registry[], private readonly each: () => Iterable<Series>, private readonly of: (series: Series) => Observed) {
    super({ name, help, labelNames: ['pool', 'target'], buckets: BUCKETS, registers })
    this.#name = name
    this.#help = help
  }

  // What the registry reads for its text output (prom-client's typings leave it out): see above.
  async getForPromString (): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const values: Array<MetricValueWithName<string>> = []
    const bucket = `${this.#name}_bucket`
    for (const series of this.each()) {
      const observed = this.of(series)
      if (observed.count === 0) continue
      let cumulative = 0
      for (let i = 0; i < BUCKETS.length; i++) {
        cumulative += observed.counts[i]!
        values.push({ labels: { le: BUCKETS[i]!, ...series.labels }, value: cumulative, metricName: bucket })
      }
      values.push({ labels: { le: '+Inf', ...series.labels }, value: observed.count, metricName: bucket })
      values.push({ labels: { ...series.labels }, value: observed.sum, metricName: `${this.#name}_sum` })
      values.push({ labels: { ...series.labels }, value: observed.count, metricName: `${this.#name}_count` })
    }
    // As prom-client's own Histogram returns it; its typings say `type` is an enum, its code a string.
    return { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' } as unknown as MetricObjectWithValues<MetricValueWithName<string>>
  }

  override async get (): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    return await this.getForPromString()
  }

  /** registry.resetMetrics() starts the series' observations over, as prom-client's would. */
  override reset (): void {
    // prom-client's constructor calls reset() too, before this class has its fields.
    if (this.each === undefined) return
    for (const series of this.each()) this.of(series).reset()
  }
}

export class Metrics {
  readonly registry: Registry
  readonly #failures: Counter<string>
  readonly #retries: Counter<string>
  readonly #aborts: Counter<string>
  readonly #tunnels: Counter<string>
  readonly #series = new Map<string, Map<string, Series>>()

  constructor (pools: ReadonlyMap<string, UpstreamPool>, registry: Registry | null) {
    this.registry = registry ?? new Registry()
    const registers = [this.registry]
    const series = (): Iterable<Series> => this.#each()
    new Counter({ // eslint-disable-line no-new
      name: `${PREFIX}requests_total`,
      help: 'Requests answered, by pool, last target tried and status class.',
      labelNames: ['pool', 'target', 'status_class'],
      registers,
      collect (this: Counter<string>) {
        this.reset()
        for (const { labels, requests } of series()) {
          for (let i = 0; i < CLASSES.length; i++) if (requests[i]! > 0) this.inc({ ...labels, status_class: CLASSES[i]! }, requests[i])
        }
      }
    })
    this.#failures = new Counter({ name: `${PREFIX}failures_total`, help: 'Failed requests, by pool, target, error type and blame.', labelNames: ['pool', 'target', 'error', 'blame'], registers })
    this.#retries = new Counter({ name: `${PREFIX}retries_total`, help: 'Tries after the first, by pool.', labelNames: ['pool'], registers })
    // Rare events, through prom-client as they happen (a client leaving, a tunnel's life).
    this.#aborts = new Counter({
      name: `${PREFIX}client_aborts_total`,
      help: 'Requests the client gave up on before its answer was complete (not in requests_total), by pool and target.',
      labelNames: ['pool', 'target'],
      registers
    })
    this.#tunnels = new Counter({
      name: `${PREFIX}websocket_tunnels_total`,
      help: 'WebSocket tunnels by event: opened, closed, failed (no target answered the handshake), refused (the target answered it with a status). Open now: opened - closed.',
      labelNames: ['pool', 'target', 'event'],
      registers
    })
    new SeriesHistogram(`${PREFIX}request_duration_seconds`, 'From arrival to the end of the answer, by pool and target.', registers, series, (s) => s.total) // eslint-disable-line no-new
    new SeriesHistogram(`${PREFIX}headers_duration_seconds`, "From the last try's start to the upstream's response headers, by pool and target.", registers, series, (s) => s.headers) // eslint-disable-line no-new
    // State read at scrape time: nothing to keep up to date on the request path.
    const each = (read: (gauge: Gauge<string>) => void) => function (this: Gauge<string>) { read(this) }
    new Gauge({ // eslint-disable-line no-new
      name: `${PREFIX}in_flight`,
      help: 'Requests in flight to each target.',
      labelNames: ['pool', 'target'],
      registers,
      collect: each((g) => { for (const pool of pools.values()) for (const t of pool.targets) g.set({ pool: pool.name, target: t.hostPort }, t.inFlight) })
    })
    new Gauge({ // eslint-disable-line no-new
      name: `${PREFIX}queue_depth`,
      help: 'Requests waiting for a target with room (limits.maxPending bounds it).',
      labelNames: ['pool'],
      registers,
      collect: each((g) => { for (const pool of pools.values()) g.set({ pool: pool.name }, pool.pending) })
    })
    new Gauge({ // eslint-disable-line no-new
      name: `${PREFIX}target_up`,
      help: 'Whether a target may take traffic (1) or is out: unhealthy, ejected or draining (0).',
      labelNames: ['pool', 'target', 'state'],
      registers,
      collect: each((g) => {
        g.reset()
        for (const pool of pools.values()) {
          for (const t of pool.targets) {
            const state = t.state()
            g.set({ pool: pool.name, target: t.hostPort, state }, state === 'unhealthy' || state === 'ejected' || state === 'draining' ? 0 : 1)
          }
        }
      })
    })
    const lookups = new Histogram({
      name: `${PREFIX}dns_lookup_seconds`,
      help: 'Time DNS lookups of target names took (failed ones too), by pool.',
      labelNames: ['pool'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers
    })
    for (const pool of pools.values()) {
      const child = lookups.labels(pool.name)
      pool.lookupObservers.push((ms) => { child.observe(ms / 1000) })
    }
    // A counter read from the targets at scrape time: it only ever grows, as Prometheus expects
    // of a _total (rate() and increase() work on it).
    new Counter({ // eslint-disable-line no-new
      name: `${PREFIX}ejections_total`,
      help: 'Times a target was ejected by outlier detection.',
      labelNames: ['pool', 'target'],
      registers,
      collect (this: Counter<string>) {
        this.reset()
        for (const pool of pools.values()) for (const t of pool.targets) this.inc({ pool: pool.name, target: t.hostPort }, t.ejectionsTotal)
      }
    })
  }

  /** The shared rate limit store (rateLimit.redis): whether it answers, and its failed counts. */
  watchRateLimitStore (health: StoreHealth): void {
    const registers = [this.registry]
    new Gauge({ // eslint-disable-line no-new
      name: `${PREFIX}rate_limit_store_up`,
      help: 'Whether the rate limit store (Redis) answers (1) or the gateway is failing open or closed without it (0).',
      registers,
      collect (this: Gauge<string>) { this.set(health.up ? 1 : 0) }
    })
    new Counter({ // eslint-disable-line no-new
      name: `${PREFIX}rate_limit_store_errors_total`,
      help: 'Rate limit counts the store failed or did not answer in time (each a request let through or refused, by rateLimit.onStoreError).',
      registers,
      collect (this: Counter<string>) {
        this.reset()
        this.inc(health.errorsTotal)
      }
    })
  }

  /**
   * Routes that choose a pool (match, split) or mirror: requests per pool by how it was chosen,
   * and mirror copies by outcome, read from the recorder's counts at scrape time.
   */
  watchRoutes (routes: ReadonlyMap<string, RouteCounts>): void {
    const registers = [this.registry]
    new Counter({ // eslint-disable-line no-new
      name: `${PREFIX}routed_total`,
      help: 'Requests of routes that choose their pool (routes[].match, split), by route, pool and how it was chosen (match, split).',
      labelNames: ['route', 'pool', 'by'],
      registers,
      collect (this: Counter<string>) {
        this.reset()
        for (const [route, counts] of routes) {
          for (const [pool, by] of counts.pools) for (const [how, n] of Object.entries(by)) if (n > 0) this.inc({ route, pool, by: how }, n)
        }
      }
    })
    new Counter({ // eslint-disable-line no-new
      name: `${PREFIX}mirror_total`,
      help: 'Copies of requests to a route\'s mirror pool, by outcome: answered (any status), failed, skipped (maxInFlight reached, or a body over bodyLimit or streamed).',
      labelNames: ['route', 'pool', 'outcome'],
      registers,
      collect (this: Counter<string>) {
        this.reset()
        for (const [route, { mirror }] of routes) {
          if (mirror === null) continue
          for (const outcome of ['answered', 'failed', 'skipped'] as const) this.inc({ route, pool: mirror.pool, outcome }, mirror[outcome])
        }
      }
    })
  }

  /** The shared request story store (status.store): whether it answers, and its failures. */
  watchStoryStore (store: StoryStore): void {
    const registers = [this.registry]
    new Gauge({ // eslint-disable-line no-new
      name: `${PREFIX}story_store_up`,
      help: 'Whether the request story store (Redis, status.store) answers (1) or each instance keeps its own stories only (0).',
      registers,
      collect (this: Gauge<string>) { this.set(store.up ? 1 : 0) }
    })
    new Counter({ // eslint-disable-line no-new
      name: `${PREFIX}story_store_errors_total`,
      help: 'Request story saves and lookups the store failed or did not answer in time.',
      registers,
      collect (this: Counter<string>) {
        this.reset()
        this.inc(store.errorsTotal)
      }
    })
  }

  /** The route caches: what each answered, what it holds, and its store's failures. */
  watchCaches (caches: readonly Caches[]): void {
    const registers = [this.registry]
    const results: Array<[string, keyof CacheCounts]> = [['hit', 'hits'], ['miss', 'misses'], ['stale_if_error', 'staleIfError'], ['stale_while_revalidate', 'staleWhileRevalidate'], ['revalidated', 'revalidated'], ['collapsed', 'collapsed']]
    new Counter({ // eslint-disable-line no-new
      name: `${PREFIX}cache_requests_total`,
      help: 'Requests on caching routes by what the cache did: hit (fresh, no upstream request), miss (went upstream), stale_if_error (a stale answer for a failure), stale_while_revalidate, revalidated (a 304 confirmed a stale answer), collapsed (waited for another request fetching the same key).',
      labelNames: ['route', 'result'],
      registers,
      collect (this: Counter<string>) {
        this.reset()
        for (const cache of caches.flatMap((c) => c.snapshot())) {
          for (const [result, field] of results) this.labels(cache.route, result).inc(cache.counts[field])
        }
      }
    })
    // One series per caching route, read from the caches when scraped (null: none for that route).
    const perRoute = (kind: 'counter' | 'gauge', name: string, help: string, read: (cache: CacheSnapshot) => number | null): void => {
      const options = { name: `${PREFIX}${name}`, help, labelNames: ['route'], registers }
      const fill = (set: (route: string, value: number) => void): void => {
        for (const cache of caches.flatMap((c) => c.snapshot())) {
          const value = read(cache)
          if (value !== null) set(cache.route, value)
        }
      }
      if (kind === 'counter') {
        new Counter({ ...options, collect (this: Counter<string>) { this.reset(); fill((route, value) => { this.labels(route).inc(value) }) } }) // eslint-disable-line no-new
      } else {
        new Gauge({ ...options, collect (this: Gauge<string>) { this.reset(); fill((route, value) => { this.labels(route).set(value) }) } }) // eslint-disable-line no-new
      }
    }
    perRoute('counter', 'cache_stored_total', 'Answers stored by a route cache.', (cache) => cache.counts.stored)
    perRoute('counter', 'cache_store_errors_total', 'Lookups and writes a route cache\'s store failed or did not answer in time (each one a miss, or an answer not stored).', (cache) => cache.counts.storeErrors)
    perRoute('gauge', 'cache_bytes', 'Bytes a route cache holds in memory (routes with a Redis store are not counted here).', (cache) => cache.bytes)
  }

  /** One finished request; `failure` when it failed. */
  record (ending: Ending, failure: Failure | null): void {
    const target = ending.target ?? 'none'
    const series = this.#of(ending.pool, target)
    const klass = Math.floor(ending.status / 100) - 1
    series.requests[klass >= 0 && klass < 5 ? klass : 4]!++
    series.total.observe(ending.ms / 1000)
    const last = ending.attempts[ending.attempts.length - 1]
    if (last?.status !== undefined) series.headers.observe(last.ms / 1000)
    if (ending.attempts.length > 1) this.#retries.labels(ending.pool).inc(ending.attempts.length - 1)
    if (failure !== null) this.#failures.labels(ending.pool, target, failure.error, failure.blame).inc()
  }

  /** The client went away before its answer was complete. */
  aborted (pool: string, target: string | null): void {
    this.#aborts.labels(pool, target ?? 'none').inc()
  }

  /** A WebSocket tunnel's event. */
  tunnel (pool: string, target: string | null, event: TunnelEvent): void {
    this.#tunnels.labels(pool, target ?? 'none', event).inc()
  }

  /** A target left its pool for good: its series stop being exported. */
  forget (pool: string, target: string): void {
    this.#series.get(pool)?.delete(target)
    // Counters with more labels than pool and target: remove every combination seen for it.
    for (const counter of [this.#failures, this.#aborts, this.#tunnels]) {
      void counter.get().then((metric) => {
        for (const { labels } of metric.values) if (labels.pool === pool && labels.target === target) counter.remove(labels)
      })
    }
  }

  #of (pool: string, target: string): Series {
    return entry(entry(this.#series, pool, () => new Map<string, Series>()), target, () => ({
      labels: { pool, target },
      requests: new Float64Array(CLASSES.length),
      total: new Observed(),
      headers: new Observed()
    }))
  }

  * #each (): Iterable<Series> {
    for (const targets of this.#series.values()) yield * targets.values()
  }
}
