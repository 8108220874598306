// Where finished exchanges are counted: rolling stats per pool and per target, the last
// example of each error type, and the stories of the last failed or retried requests (a ring,
// so memory stays bounded). It reads what the exchange reports and the frozen failure record;
// it never classifies anything itself.
import type { Failure } from '../errors/failure.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { RollingStats } from './stats.js'
import type { Metrics } from './metrics.js'
import type { StoryStore } from './story-store.js'
import { entry, type ErrorExample, type RequestStory, type Ending, type TunnelCounts, type TunnelEvent, type RouteCounts } from './records.js'
import type { RoutedBy } from '../routing/router.js'
import type { MirrorOutcome } from '../proxy/mirror.js'

export type { ErrorExample, RequestStory, Ending, TunnelCounts, TunnelEvent, RouteCounts }

const newTunnelCounts = (): TunnelCounts => ({ opened: 0, open: 0, failed: 0, refused: 0 })

function countTunnel (counts: TunnelCounts, event: TunnelEvent): void {
  if (event === 'opened') {
    counts.opened++
    counts.open++
  } else if (event === 'closed') {
    counts.open--
  } else {
    counts[event]++
  }
}

export class PoolStats {
  readonly stats: RollingStats
  readonly targets = new Map<string, RollingStats>()
  /** The pool's last requests that all failed: how many, and of which types (reset by a success). */
  streak = 0
  /** When the streak's first failure ended (ms); meaningless while `streak` is 0. */
  streakSince = 0
  readonly streakErrors = new Map<ProxyErrorType, number>()
  readonly errors = new Map<ProxyErrorType, ErrorExample>()
  readonly tunnels = newTunnelCounts()
  readonly targetTunnels = new Map<string, TunnelCounts>()

  /** `marks`: the latencies whose exceedances are counted exactly (see RollingStats). */
  constructor (readonly marks: readonly number[] = []) {
    this.stats = new RollingStats(marks)
  }

  target (hostPort: string): RollingStats {
    return entry(this.targets, hostPort, () => new RollingStats(this.marks))
  }

  targetTunnel (hostPort: string): TunnelCounts {
    return entry(this.targetTunnels, hostPort, newTunnelCounts)
  }

  /** A target left the pool for good: its series go (the pool's own totals keep its requests). */
  forget (hostPort: string): void {
    this.targets.delete(hostPort)
    this.targetTunnels.delete(hostPort)
  }
}

export class Recorder {
  readonly pools = new Map<string, PoolStats>()
  /** By route prefix: only routes that choose a pool or mirror are counted. */
  readonly routes = new Map<string, RouteCounts>()
  readonly #ring: Array<RequestStory | undefined>
  readonly #byId = new Map<string, RequestStory>()
  #next = 0

  /**
   * `stats`: keep rolling stats and examples (the status page reads them); `keep`: how many
   * stories to keep; `metrics`: counters to feed, if any.
   */
  constructor (readonly keep: number, readonly metrics: Metrics | null = null, readonly stats = true, readonly shared: StoryStore | null = null, readonly marks: readonly number[] = []) {
    this.#ring = new Array(keep)
  }

  /** A target left its pool for good (see UpstreamPool.onTargetRemoved). */
  forget (pool: string, hostPort: string): void {
    this.pools.get(pool)?.forget(hostPort)
    this.metrics?.forget(pool, hostPort)
  }

  pool (name: string): PoolStats {
    return entry(this.pools, name, () => new PoolStats(this.marks))
  }

  /** A response delivered in full, after one try or several. */
  completed (ending: Ending, now = Date.now()): void {
    this.metrics?.record(ending, null)
    if (!this.stats) return
    const retried = ending.attempts.length > 1
    const pool = this.#count(ending, null, retried, now)
    if (pool.streak > 0) {
      pool.streak = 0
      pool.streakErrors.clear()
    }
    if (retried) this.#keep(ending, null, now)
  }

  /** The exchange ended in a failure: answered with it, or cut after the headers. */
  failed (ending: Ending, failure: Failure, now = Date.now()): void {
    this.metrics?.record(ending, failure)
    if (!this.stats) return
    const pool = this.#count(ending, failure.error, ending.attempts.length > 1, now)
    if (pool.streak === 0) pool.streakSince = now
    pool.streak++
    pool.streakErrors.set(failure.error, (pool.streakErrors.get(failure.error) ?? 0) + 1)
    const example = pool.errors.get(failure.error)
    const at = new Date(now).toISOString()
    if (example === undefined) {
      pool.errors.set(failure.error, { count: 1, requestId: ending.id, at, target: failure.target, cause: failure.cause })
    } else {
      example.count++
      example.requestId = ending.id
      example.at = at
      example.target = failure.target
      example.cause = failure.cause
    }
    this.#keep(ending, failure, now)
  }

  /**
   * The client went away before its answer ended: counted apart from the answered requests
   * (not a 5xx, not the target's fault). `target`: the last one tried, if any.
   */
  aborted (pool: string, target: string | null, now = Date.now()): void {
    this.metrics?.aborted(pool, target)
    if (!this.stats) return
    const stats = this.pool(pool)
    stats.stats.recordAborted(now)
    if (target !== null) stats.target(target).recordAborted(now)
  }

  /** A request of `route` sent to `pool`, chosen `by` match, split or the route itself. */
  routed (route: string, pool: string, by: RoutedBy): void {
    const counts = entry(this.#route(route).pools, pool, () => ({ route: 0, match: 0, split: 0 }))
    counts[by]++
  }

  /** A copy of a request of `route` to its mirror `pool`, and what became of it. */
  mirrored (route: string, pool: string, outcome: MirrorOutcome): void {
    const counts = this.#route(route)
    counts.mirror ??= { pool, answered: 0, failed: 0, skipped: 0 }
    counts.mirror[outcome]++
  }

  #route (prefix: string): RouteCounts {
    let counts = this.routes.get(prefix)
    if (counts === undefined) {
      counts = { pools: new Map(), mirror: null }
      this.routes.set(prefix, counts)
    }
    return counts
  }

  /** A WebSocket handshake or tunnel of `pool`, on `target` (null: none was tried). */
  tunnel (pool: string, target: string | null, event: TunnelEvent): void {
    this.metrics?.tunnel(pool, target, event)
    if (!this.stats) return
    const stats = this.pool(pool)
    countTunnel(stats.tunnels, event)
    if (target !== null) countTunnel(stats.targetTunnel(target), event)
  }

  /** A story kept on this instance. */
  story (id: string): RequestStory | null {
    return this.#byId.get(id) ?? null
  }

  /** A story kept here or, with status.store, by any instance (null when Redis fails: fail open). */
  async find (id: string): Promise<RequestStory | null> {
    return this.story(id) ?? (this.shared === null ? null : await this.shared.find(id))
  }

  /** The stories kept, newest first. */
  stories (): RequestStory[] {
    const out: RequestStory[] = []
    for (let i = 1; i <= this.keep; i++) {
      const story = this.#ring[(this.#next - i + this.keep) % this.keep]
      if (story === undefined) break
      out.push(story)
    }
    return out
  }

  #count (ending: Ending, error: ProxyErrorType | null, retried: boolean, now: number): PoolStats {
    const pool = this.pool(ending.pool)
    pool.stats.record(now, ending.ms, ending.status, error, retried)
    if (ending.target !== null) pool.target(ending.target).record(now, ending.ms, ending.status, error, retried)
    return pool
  }

  #keep (ending: Ending, failure: Failure | null, now: number): void {
    if (this.keep === 0) return
    const story: RequestStory = {
      id: ending.id,
      at: new Date(now).toISOString(),
      method: ending.method,
      route: ending.route,
      pool: ending.pool,
      attempts: ending.attempts,
      answer: failure === null
        ? { status: ending.status, error: null, cause: null, blame: null, note: null }
        : { status: ending.status, error: failure.error, cause: failure.cause, blame: failure.blame, note: failure.note },
      ms: Math.round(ending.ms),
      poolState: ending.poolState(),
      ...(ending.cache !== undefined ? { cache: ending.cache } : {})
    }
    const old = this.#ring[this.#next]
    if (old !== undefined && this.#byId.get(old.id) === old) this.#byId.delete(old.id)
    this.#ring[this.#next] = story
    this.#byId.set(story.id, story)
    this.#next = (this.#next + 1) % this.keep
    this.shared?.save(story)
  }
}
