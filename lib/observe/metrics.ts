// Prometheus metrics with prom-client, in a registry of the gateway's own unless the app gives
// its own (so they join its existing /metrics). Labels stay bounded: pool, target (`host:port`
// from the configuration), error type, blame, status class; never the URL. Each target's label
// children are looked up once and kept, so a request costs no label hashing.
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Failure } from '../errors/failure.js'
import type { UpstreamPool } from '../pool/pool.js'
import { entry, type Ending } from './recorder.js'

const PREFIX = 'fastify_upstream_'
const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const
/** Seconds: from a cache hit to a request that waits out a long timeouts.headers. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

interface Series {
  requests: Counter.Internal[]
  total: Histogram.Internal<string>
  headers: Histogram.Internal<string>
}

export class Metrics {
  readonly registry: Registry
  readonly #requests: Counter<string>
  readonly #failures: Counter<string>
  readonly #retries: Counter<string>
  readonly #total: Histogram<string>
  readonly #headers: Histogram<string>
  readonly #series = new Map<string, Map<string, Series>>()

  constructor (pools: ReadonlyMap<string, UpstreamPool>, registry: Registry | null) {
    this.registry = registry ?? new Registry()
    const registers = [this.registry]
    this.#requests = new Counter({ name: `${PREFIX}requests_total`, help: 'Requests answered, by pool, last target tried and status class.', labelNames: ['pool', 'target', 'status_class'], registers })
    this.#failures = new Counter({ name: `${PREFIX}failures_total`, help: 'Failed requests, by pool, target, error type and blame.', labelNames: ['pool', 'target', 'error', 'blame'], registers })
    this.#retries = new Counter({ name: `${PREFIX}retries_total`, help: 'Tries after the first, by pool.', labelNames: ['pool'], registers })
    this.#total = new Histogram({ name: `${PREFIX}request_duration_seconds`, help: 'From arrival to the end of the answer, by pool and target.', labelNames: ['pool', 'target'], buckets: BUCKETS, registers })
    this.#headers = new Histogram({ name: `${PREFIX}headers_duration_seconds`, help: "From the last try's start to the upstream's response headers, by pool and target.", labelNames: ['pool', 'target'], buckets: BUCKETS, registers })
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

  /** One finished request; `failure` when it failed. */
  record (ending: Ending, failure: Failure | null): void {
    const target = ending.target ?? 'none'
    const series = this.#of(ending.pool, target)
    const klass = Math.floor(ending.status / 100) - 1
    series.requests[klass >= 0 && klass < 5 ? klass : 4]!.inc()
    series.total.observe(ending.ms / 1000)
    const last = ending.attempts[ending.attempts.length - 1]
    if (last?.status !== undefined) series.headers.observe(last.ms / 1000)
    if (ending.attempts.length > 1) this.#retries.labels(ending.pool).inc(ending.attempts.length - 1)
    if (failure !== null) this.#failures.labels(ending.pool, target, failure.error, failure.blame).inc()
  }

  #of (pool: string, target: string): Series {
    return entry(entry(this.#series, pool, () => new Map<string, Series>()), target, () => ({
      requests: CLASSES.map((c) => this.#requests.labels(pool, target, c)),
      total: this.#total.labels(pool, target),
      headers: this.#headers.labels(pool, target)
    }))
  }
}
