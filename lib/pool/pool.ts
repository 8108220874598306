// A pool: its targets and the parts that decide what may take traffic right now. Each part owns
// its state (Pingora's load balancer is composed the same way):
//   membership.ts  which targets there are (fixed ones, and what names resolve to)
//   health.ts      active checks, and the health they conclude (rise and fall)
//   outlier.ts     passive health: failure streaks, ejections and their timers, the half-open trial
//   selection.ts   the targets one request may try, best first (balancer, backups, panic)
//   admission.ts   requests waiting for a target with room
//   outage.ts      why nothing may take a request, in words
//   transitions.ts every change of a target's state, logged once with its reason
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { HealthConfig, PoolConfig } from '../options/config.js'
import type { Target, TargetSnapshot } from './target.js'
import { HealthChecker } from './health.js'
import { isFailureStatus, OutlierDetector } from './outlier.js'
import { RetryBudget } from './budget.js'
import type { DiscoveredName, NameStatus } from './discovery.js'
import { Credentials } from './credentials.js'
import { Transitions } from './transitions.js'
import { Membership } from './membership.js'
import { Selection } from './selection.js'
import { AdmissionQueue } from './admission.js'
import { explainOutage, type Outage } from './outage.js'
import { unknownTarget } from '../errors/codes.js'

export type { Outage } from './outage.js'

export interface PoolSnapshot {
  name: string
  balancer: string
  /** Every target is out and `panic` sends traffic to all of them anyway. */
  panic: boolean
  targets: TargetSnapshot[]
  /** Targets given by name (or SRV): how each resolves. Empty when every target is an IP. */
  dns: NameStatus[]
}

export class UpstreamPool {
  readonly name: string
  readonly config: PoolConfig
  /** The configured origins, for rewriting Location (names included). */
  readonly origins: ReadonlySet<string>
  /** Told how long each DNS lookup took (the metrics). */
  readonly lookupObservers: Array<(ms: number) => void> = []
  readonly budget: RetryBudget
  /** pools.<name>.auth: what every request to a target carries; null without it. */
  readonly credentials: Credentials | null
  readonly #transitions: Transitions
  readonly #checker: HealthChecker | null
  readonly #outlier: OutlierDetector
  readonly #members: Membership
  readonly #selection: Selection
  readonly #queue: AdmissionQueue
  /** Told when a removed target has left for good, so per-target series can go with it. */
  readonly #onRemoved: Array<(target: Target) => void> = []
  /** Requests in flight a target may have (see hasRoom). */
  readonly #room: number

  constructor (config: PoolConfig, log: FastifyBaseLogger) {
    this.name = config.name
    this.config = config
    this.budget = new RetryBudget(config.retry.budget.ratio, config.retry.budget.minPerSecond)
    this.#room = Math.min(config.limits.maxConcurrent, config.connections.perTarget)
    this.credentials = config.auth === null ? null : new Credentials(config.name, config.auth, log)
    this.origins = new Set(config.targets.filter((t) => t.srv === null).map((t) => t.url))
    this.#transitions = new Transitions(config.name, log)
    this.#checker = config.health === null
      ? null
      : new HealthChecker(config as PoolConfig & { health: HealthConfig }, this.#transitions, this.credentials)
    this.#outlier = new OutlierDetector(config.outlier, () => this.targets, this.#transitions)
    this.#queue = new AdmissionQueue(config.limits.maxPending)
    this.#members = new Membership(config, this.#transitions, log, {
      joined: (target) => { this.#checker?.add(target) },
      left: (target) => {
        this.#checker?.remove(target)
        this.#outlier.forget(target)
        for (const listener of this.#onRemoved) listener(target)
      },
      looked: (ms) => { for (const observe of this.lookupObservers) observe(ms) }
    })
    for (const target of this.#members.fixed()) this.#checker?.add(target)
    this.#selection = new Selection(config, this.#outlier, log)
  }

  /** The targets now: fixed ones and the addresses of names, those draining out included. */
  get targets (): readonly Target[] {
    return this.#members.targets
  }

  /** Requests waiting in line for room now (limits.maxPending bounds it). */
  get pending (): number {
    return this.#queue.length
  }

  get inPanic (): boolean {
    return this.#selection.inPanic
  }

  /**
   * Starts active health checks and discovery (once the app is ready). Resolves when each name's
   * first lookup is over, whatever its outcome: a name that does not resolve is retried.
   */
  async start (): Promise<void> {
    this.#checker?.start()
    await this.#members.start()
  }

  /**
   * Calls `listener` with each discovered address that has left the pool for good (drained
   * after it left the DNS answer): what is kept per target must not grow with every address a
   * name ever had.
   */
  onTargetRemoved (listener: (target: Target) => void): void {
    this.#onRemoved.push(listener)
  }

  /** Targets for this request, best first; none when the request should get 503 at once. */
  candidates (request: FastifyRequest): Target[] {
    return this.#selection.candidates(this.targets, request)
  }

  /** May this request try a target that is out: is it the half-open trial it was given? */
  isTrial (target: Target): boolean {
    return this.#outlier.isTrial(target)
  }

  /**
   * Whether a target has room for one more request: limits.maxConcurrent, and
   * connections.perTarget (one request per connection). Waiting for room is the queue phase.
   */
  hasRoom (target: Target): boolean {
    return target.inFlight < this.#room
  }

  /** What bounds a target's requests in flight, in words naming the option. */
  roomWords (): string {
    const { limits, connections } = this.config
    return connections.perTarget < limits.maxConcurrent
      ? `connections.perTarget (${connections.perTarget}) connections in use`
      : `limits.maxConcurrent (${limits.maxConcurrent}) requests in flight`
  }

  /** Waits in line for room (see AdmissionQueue.enqueue); null when the line is full. */
  enqueue (ready: () => void, timedOut: () => void, timeoutMs: number, again = false): { cancel: () => void } | null {
    return this.#queue.enqueue(ready, timedOut, timeoutMs, again)
  }

  /** A request to one of this pool's targets ended: a drained address may leave, the oldest waiter may go. */
  released (): void {
    this.#members.sweep()
    this.#queue.next()
  }

  /** Why nothing can take traffic: one line per target, and when one may be back. */
  outage (): Outage {
    return explainOutage(this.config, this.targets, this.#members.names())
  }

  /** A try got response headers. Upstream 502/503/504 count as failures for ejection. */
  recordResponse (target: Target, status: number, ms: number): void {
    target.recordLatency(ms)
    if (isFailureStatus(status)) this.#outlier.failed(target, 'upstream_error_status', null, `${target.hostPort} answered ${status}`)
    else this.#outlier.succeeded(target, status)
  }

  /** A try failed in the gateway's view (connect, timeout, reset, protocol). */
  recordFailure (target: Target, error: string, cause: string | null, words?: string): void {
    this.#outlier.failed(target, error, cause, words)
  }

  /** Drains a target; a name's URL drains every address it resolves to now. */
  drain (url: string): void {
    for (const target of this.findAll(url)) {
      if (target.draining) continue
      this.#transitions.change(target, 'drained by an operator: no new requests, those in flight finish', () => { target.drain() })
    }
  }

  enable (url: string): void {
    for (const target of this.findAll(url)) {
      // An address that left the DNS answer is on its way out; no operator brings it back.
      if (target.removed) continue
      this.#transitions.change(target, 'enabled by an operator', () => { target.enable() })
    }
  }

  snapshot (): PoolSnapshot {
    const balancer = this.config.balancer
    const now = Date.now()
    return {
      name: this.name,
      balancer: balancer.kind === 'hash' ? `hash(${balancer.key})` : balancer.kind,
      panic: this.inPanic,
      targets: this.targets.map((t) => t.snapshot(now)),
      dns: this.names().map((name) => name.status())
    }
  }

  /** How each discovered name stands (for the report and its diagnosis). */
  names (): DiscoveredName[] {
    return this.#members.names()
  }

  async close (): Promise<void> {
    this.#checker?.stop()
    this.credentials?.close()
    this.#queue.clear()
    this.#outlier.close()
    await this.#members.close()
  }

  /** The target with this URL (or origin); throws, naming the targets, for one not in the pool. */
  find (url: string): Target {
    return this.findAll(url)[0]!
  }

  /**
   * The targets a URL names: the one with that URL (or origin), or every address of a name
   * given as its configured URL. Throws, naming the targets, when none matches.
   */
  findAll (url: string): Target[] {
    const origin = safeOrigin(url)
    const exact = this.targets.find((t) => t.url === url || t.url === origin)
    if (exact !== undefined) return [exact]
    const named = this.targets.filter((t) => t.address !== null && (t.source === url || t.source === origin))
    if (named.length > 0) return named
    throw unknownTarget(this.name, url, this.targets.map((t) => t.url))
  }
}

function safeOrigin (url: string): string | null {
  try {
    return new URL(url).origin
  } catch {
    return null
  }
}
