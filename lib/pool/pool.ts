// A pool: its targets, the balancer that orders them, and what may take traffic right now —
// which active checks, passive ejection, drains and backups decide. Every change of a
// target's state is logged once, with the reason.
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { HealthConfig, PoolConfig } from '../options/config.js'
import { FAILING_AFTER, Target, type CheckResult, type TargetSnapshot, type TargetState } from './target.js'
import { createBalancer, type Balancer } from './balancer/index.js'
import { HealthChecker } from './health.js'
import { ejectionTime, isFailureStatus, mayEject, shouldEject } from './outlier.js'
import { RetryBudget } from './budget.js'
import { DiscoveredName, NameResolver, sourceOf, type Endpoint, type NameStatus } from './discovery.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { Credentials } from './credentials.js'
import { classifyLookupFailure } from '../errors/classify.js'
import { perTargetRoom } from './protocol.js'

interface Waiter {
  ready: () => void
  timer: NodeJS.Timeout
}

export interface PoolSnapshot {
  name: string
  balancer: string
  /** Every target is out and `panic` sends traffic to all of them anyway. */
  panic: boolean
  targets: TargetSnapshot[]
  /** Targets given by name (or SRV): how each resolves. Empty when every target is an IP. */
  dns: NameStatus[]
}

/** Why a pool has no target for a request: the details of its failure record. */
export interface Outage {
  /** destination_unavailable; dns_error or dns_timeout when no name of the pool resolved yet. */
  error: Extract<ProxyErrorType, 'destination_unavailable' | 'dns_error' | 'dns_timeout'>
  context: {
    phase: 'route' | 'dns'
    /** Per target, why it is out, one line each. */
    why: string
    /** Seconds until a target may be back, when known. */
    retryAfter: number | null
    cause?: string | null
    /** The name that does not resolve (`host:port`), for dns_error and dns_timeout. */
    target?: string
    /** The last lookup: its code and how long it took. */
    note?: string
  }
}

/** One target of the configuration: a fixed address, or a name and the targets it resolves to. */
interface Named {
  name: DiscoveredName
  /** By endpoint key; targets that left the answer stay here while they drain. */
  targets: Map<string, Target>
}

/** The latency sample a failed try counts as (see recordFailure). */
const FAILURE_LATENCY_MS = 1000

/** While every target is ejected, one trial request at most this often (half-open). */
const TRIAL_INTERVAL_MS = 1000

const OUT_STATES = new Set<TargetState>(['unhealthy', 'ejected', 'draining'])

export class UpstreamPool {
  readonly name: string
  readonly config: PoolConfig
  /** The targets now; a new array whenever discovery changes the set (never changed in place). */
  #targets: Target[] = []
  /** Per configured target: a fixed Target, or a discovered name. */
  readonly #sources: Array<Target | Named>
  /** Targets that left their name's answer and still have requests in flight. */
  readonly #leaving = new Set<Target>()
  /** Told when a removed target has left for good, so per-target series can go with it. */
  readonly #onRemoved: Array<(target: Target) => void> = []
  /** Connection pools of removed targets still closing (awaited on close). */
  readonly #closing = new Set<Promise<void>>()
  /** The configured origins, for rewriting Location (names included). */
  readonly origins: ReadonlySet<string>
  /** Told how long each DNS lookup took (the metrics). */
  readonly lookupObservers: Array<(ms: number) => void> = []
  #started = false
  readonly #balancer: Balancer
  readonly #log: FastifyBaseLogger
  readonly #checker: HealthChecker | null
  /** Requests waiting for a target with room (limits), oldest first. */
  readonly #waiters: Waiter[] = []
  readonly budget: RetryBudget
  /** pools.<name>.auth: what every request to a target carries; null without it. */
  readonly credentials: Credentials | null
  #inPanic = false
  /** Requests in flight a target may have (see hasRoom). */
  readonly #room: number
  /** The ejected target the current half-open trial went to (see #trialTarget); null once it ends. */
  #trial: Target | null = null
  /** When the last half-open trial was let through, whatever became of it: at most one a second. */
  #lastTrialAt = -Infinity
  /** Each ejected target's timer to readmit it; a successful trial ends it early. */
  readonly #ejections = new Map<Target, NodeJS.Timeout>()

  constructor (config: PoolConfig, log: FastifyBaseLogger) {
    this.name = config.name
    this.config = config
    this.#balancer = createBalancer(config.balancer)
    this.#log = log
    this.budget = new RetryBudget(config.retry.budget.ratio, config.retry.budget.minPerSecond)
    this.#room = Math.min(config.limits.maxConcurrent, perTargetRoom(config.protocol, config.connections.perTarget, config.connections.streams))
    this.credentials = config.auth === null ? null : new Credentials(config.name, config.auth, log)
    this.#checker = config.health === null
      ? null
      : new HealthChecker(config as PoolConfig & { health: HealthConfig }, (target, result) => { this.#onCheck(target, result) }, this.credentials)
    this.origins = new Set(config.targets.filter((t) => t.srv === null).map((t) => t.url))
    this.#sources = config.targets.map((t) => {
      const source = sourceOf(t)
      if (source === null) {
        const target = new Target(t, config)
        this.#checker?.add(target)
        return target
      }
      // One resolver per name: a lookup cancelled at its timeout cancels no other name's.
      const named: Named = {
        targets: new Map(),
        name: new DiscoveredName(t, source, new NameResolver(config.discovery), this.name, {
          resolved: (endpoints) => { this.#apply(named, endpoints) },
          looked: (ms) => { for (const observe of this.lookupObservers) observe(ms) },
          warn: (record, msg) => { this.#log.warn(record, msg) },
          info: (record, msg) => { this.#log.info(record, msg) }
        })
      }
      return named
    })
    this.#rebuild()
  }

  /** The targets now: fixed ones and the addresses of names, those draining out included. */
  get targets (): readonly Target[] {
    return this.#targets
  }

  /** Requests waiting in line for room now (limits.maxPending bounds it). */
  get pending (): number {
    return this.#waiters.length
  }

  /**
   * Starts active health checks and discovery (once the app is ready). Resolves when each name's
   * first lookup is over, whatever its outcome (at most discovery.timeout): a name that does
   * not resolve does not keep the app from starting; it is retried.
   */
  async start (): Promise<void> {
    this.#checker?.start()
    await Promise.all(this.#names().map(async (n) => await n.name.start()))
    this.#started = true
  }

  #names (): Named[] {
    return this.#sources.filter((s): s is Named => !(s instanceof Target))
  }

  /**
   * A name's new answer: addresses that stay keep their Target (health, ejection, counters),
   * new ones join (unknown while health checks have not judged them, warming up under slow
   * start), gone ones drain and leave once their requests in flight end.
   */
  #apply (named: Named, endpoints: readonly Endpoint[]): void {
    const now = Date.now()
    const seen = new Set<string>()
    const added: string[] = []
    const removed: string[] = []
    for (const endpoint of endpoints) {
      seen.add(endpoint.key)
      const known = named.targets.get(endpoint.key)
      if (known !== undefined) {
        known.update(endpoint)
        if (known.removed) {
          // Back in the answer before it finished draining: it stays, state and all.
          this.#leaving.delete(known)
          this.#change(known, `is in the DNS answer for ${named.name.label} again`, () => {
            known.removed = false
            known.draining = false
          })
        }
        continue
      }
      const target = new Target(named.name.target, this.config, endpoint)
      // Not the first answer: a new address ramps up under slow start, as a recovered one does.
      if (this.#started) target.warmingSince = now
      named.targets.set(endpoint.key, target)
      this.#checker?.add(target)
      added.push(endpoint.ip)
    }
    for (const [key, target] of named.targets) {
      if (seen.has(key) || target.removed) continue
      removed.push(target.address!)
      this.#change(target, `left the DNS answer for ${named.name.label}: no new requests, those in flight finish`, () => {
        target.removed = true
        target.draining = true
      })
      this.#leaving.add(target)
    }
    if (added.length > 0 || removed.length > 0) {
      this.#log.info({ pool: this.name, name: named.name.label, added, removed, addresses: endpoints.map((e) => e.ip) },
        `${this.name}: ${named.name.label} now resolves to ${endpoints.map((e) => e.ip).join(', ')}${added.length > 0 ? `; added ${added.join(', ')}` : ''}${removed.length > 0 ? `; removed ${removed.join(', ')}` : ''}`)
    }
    this.#rebuild()
    this.#sweep()
  }

  /** Removed targets whose last request ended leave the pool; their connections close. */
  #sweep (): void {
    let gone = false
    for (const target of this.#leaving) {
      if (target.inFlight > 0) continue
      this.#leaving.delete(target)
      for (const named of this.#names()) {
        for (const [key, t] of named.targets) if (t === target) named.targets.delete(key)
      }
      this.#checker?.remove(target)
      clearTimeout(this.#ejections.get(target))
      this.#ejections.delete(target)
      if (this.#trial === target) this.#trial = null
      const closing = target.close()
      this.#closing.add(closing)
      void closing.finally(() => this.#closing.delete(closing))
      for (const listener of this.#onRemoved) listener(target)
      gone = true
    }
    if (gone) this.#rebuild()
  }

  /**
   * Calls `listener` with each discovered address that has left the pool for good (drained
   * after it left the DNS answer): what is kept per target must not grow with every address a
   * name ever had.
   */
  onTargetRemoved (listener: (target: Target) => void): void {
    this.#onRemoved.push(listener)
  }

  #rebuild (): void {
    this.#targets = this.#sources.flatMap((s) => s instanceof Target ? [s] : [...s.targets.values()])
  }

  /**
   * Targets for this request, best first. Primaries that may take traffic; known-healthy ones
   * before those no check has judged yet; backups only when no primary can; in panic, every
   * target but drained ones; else none (the request gets 503 at once).
   */
  candidates (request: FastifyRequest): Target[] {
    const now = Date.now()
    // No target at all: a pool whose names have not resolved yet (see outage).
    if (this.#targets.length === 0) return []
    // The common case, every target a healthy primary, needs no filtering.
    if (this.targets.every((t) => !t.backup && t.health === 'healthy' && t.isAvailable(now))) {
      this.#setPanic(false)
      return this.#balancer.order(this.targets, request)
    }
    const primaries: Target[] = []
    const backups: Target[] = []
    for (const target of this.targets) {
      if (target.isAvailable(now)) (target.backup ? backups : primaries).push(target)
    }
    const usable = primaries.length > 0 ? primaries : backups
    if (usable.length > 0) {
      this.#setPanic(false)
      const judged = usable.filter((t) => t.health === 'healthy')
      return this.#balancer.order(judged.length > 0 ? judged : usable, request)
    }
    if (this.config.panic) {
      this.#setPanic(true)
      const all = this.targets.filter((t) => !t.draining)
      return all.length > 0 ? this.#balancer.order(all, request) : []
    }
    const trial = this.#trialTarget(now)
    if (trial === null) return []
    this.#trial = trial
    this.#lastTrialAt = now
    return [trial]
  }

  /**
   * Half-open, as a circuit breaker: while no target may take traffic and some primary is out
   * only by ejection, one request at a time, at most one a second, goes to the ejected primary
   * whose ejection began first; its success ends that ejection. A single-target pool then
   * serves again within about a second of its service coming back, not after outlier.ejectFor,
   * and answers a fast 503 meanwhile (no connect per request).
   */
  #trialTarget (now: number): Target | null {
    // At most one a second, counted from the last trial whatever became of it: a trial that
    // succeeded and a re-ejection right after it do not open the door to another at once.
    if (now - this.#lastTrialAt < TRIAL_INTERVAL_MS) return null
    let first: Target | null = null
    for (const target of this.targets) {
      if (target.backup || target.draining || target.health === 'unhealthy' || !target.isEjected(now)) continue
      // One trial at a time: ejected targets still busy with requests (a trial among them) wait.
      if (target.inFlight > 0) return null
      if (first === null || target.since < first.since) first = target
    }
    // The first trial comes a second after the ejection (or re-ejection) began, not at once.
    if (first === null || now - first.since < TRIAL_INTERVAL_MS) return null
    return first
  }

  /** May this request try a target that is out: is it the half-open trial it was given? */
  isTrial (target: Target): boolean {
    return this.#trial === target && target.isEjected()
  }

  get inPanic (): boolean {
    return this.#inPanic
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

  /**
   * Waits in line for room: `ready` when a request somewhere in the pool ends, `timedOut` after
   * `timeoutMs`. Null when limits.maxPending requests already wait. A request that was woken
   * but found no room it may use (`again`) goes back to the head of the line, not the tail, and
   * is not turned away for a full line: it was already in it.
   */
  enqueue (ready: () => void, timedOut: () => void, timeoutMs: number, again = false): { cancel: () => void } | null {
    if (!again && this.#waiters.length >= this.config.limits.maxPending) return null
    const waiter: Waiter = {
      ready,
      timer: setTimeout(() => {
        this.#remove(waiter)
        timedOut()
      }, timeoutMs)
    }
    if (again) this.#waiters.unshift(waiter)
    else this.#waiters.push(waiter)
    return { cancel: () => { this.#remove(waiter) } }
  }

  /** A request to one of this pool's targets ended: the oldest waiter may go. */
  released (): void {
    if (this.#leaving.size > 0) this.#sweep()
    const waiter = this.#waiters.shift()
    if (waiter === undefined) return
    clearTimeout(waiter.timer)
    waiter.ready()
  }

  #remove (waiter: Waiter): void {
    clearTimeout(waiter.timer)
    const i = this.#waiters.indexOf(waiter)
    if (i >= 0) this.#waiters.splice(i, 1)
  }

  /**
   * Why nothing can take traffic: one line per target, and when one may be back. With no
   * target at all because no name has resolved yet: the lookup's failure (dns_error, or
   * dns_timeout when the resolver did not answer), with its code and how long it took.
   */
  outage (): Outage {
    const now = Date.now()
    if (this.#targets.length === 0) {
      const failing = this.#names().find((n) => n.name.lastError !== null)
      if (failing !== undefined) {
        const name = failing.name
        const last = name.lastError!
        const source = name.source
        return {
          error: classifyLookupFailure(last.code),
          context: {
            phase: 'dns',
            cause: last.code,
            target: source.kind === 'srv' ? source.name : `${source.hostname}:${source.port}`,
            why: '',
            retryAfter: Math.max(1, Math.ceil(((name.nextRefresh ?? now) - now) / 1000)),
            note: `no address is known for ${name.label}: its last lookup failed with ${last.code} after ${last.ms} ms at ${new Date(last.at).toISOString()}, failing since ${new Date(name.failingSince ?? last.at).toISOString()}`
          }
        }
      }
    }
    const lines = this.targets.map((t) => `${t.hostPort}${t.backup ? ' (backup)' : ''}: ${t.why(t.state(now)) ?? 'available'}`)
    const waits = this.targets.flatMap((t) => {
      // An ejected primary gets a half-open trial within a second (see #trialTarget).
      if (t.isEjected(now)) return [Math.min(t.ejectedUntil! - now, t.backup ? Infinity : TRIAL_INTERVAL_MS) / 1000]
      if (t.health === 'unhealthy' && this.config.health !== null) return [(this.config.health.interval * this.config.health.healthyAfter) / 1000]
      return []
    })
    return {
      error: 'destination_unavailable',
      context: {
        phase: 'route',
        why: lines.map((line) => `\n- ${line}`).join(''),
        retryAfter: waits.length > 0 ? Math.max(1, Math.ceil(Math.min(...waits))) : null
      }
    }
  }

  /** A try got response headers. Upstream 502/503/504 count as failures for ejection. */
  recordResponse (target: Target, status: number, ms: number): void {
    target.recordLatency(ms)
    if (isFailureStatus(status)) {
      this.recordFailure(target, 'upstream_error_status', null, `${target.hostPort} answered ${status}`)
      return
    }
    if (this.isTrial(target)) {
      this.#trial = null
      this.#readmit(target, `a trial request succeeded (${target.hostPort} answered ${status}) while no target could take traffic; on probation: one more failure ejects it again`)
      return
    }
    if (target.consecutiveFailures >= FAILING_AFTER) {
      const failed = target.consecutiveFailures
      this.#change(target, `answered ${status} after ${failed} failed requests in a row`, () => { target.consecutiveFailures = 0 })
    }
    target.consecutiveFailures = 0
    target.probation = false
  }

  /** A try failed in the gateway's view (connect, timeout, reset, protocol). */
  recordFailure (target: Target, error: string, cause: string | null, words?: string): void {
    const now = Date.now()
    // The clock ended an ejection whose timer has not run yet: end it first, so the records
    // read in order (ejected → healthy, then what this failure does) and its timer goes.
    if (target.ejectedUntil !== null && !target.isEjected(now) && this.#ejections.has(target)) this.#readmit(target, this.#ejectionOver(target))
    if (this.#trial === target) this.#trial = null
    // What the target showed before this failure: the `from` of whatever it changes.
    const before = target.state(now)
    target.failures++
    target.consecutiveFailures++
    // A failure counts as slow for latency-aware balancing, however fast it came.
    target.recordLatency(Math.max(FAILURE_LATENCY_MS, 2 * (target.latencyEwma ?? 0)))
    target.lastError = { error, cause, at: now }
    const outlier = this.config.outlier
    const failing = (): void => {
      if (before !== 'failing' && target.state(now) === 'failing') this.#change(target, `${target.consecutiveFailures} requests in a row failed, the last: ${words ?? `${error}${cause !== null ? ` (${cause})` : ''}`}`, () => {}, before)
    }
    if (outlier === null || target.isEjected(now) || target.draining) return failing()
    if (!shouldEject(outlier, target.consecutiveFailures, target.probation)) return failing()
    const ejectedNow = this.targets.filter((t) => t.isEjected(now)).length
    if (!mayEject(outlier, ejectedNow, this.targets.length)) return failing()
    // A target that stayed in for maxEjectFor since its last return starts afresh.
    if (target.ejections > 0 && now - target.since > outlier.maxEjectFor) target.ejections = 0
    const ejection = target.ejections + 1
    const ms = ejectionTime(outlier, ejection)
    const streak = target.probation
      ? 'failed again on its first request back'
      : `${target.consecutiveFailures} ${target.consecutiveFailures === 1 ? 'failure' : 'failures'} in a row (outlier.consecutiveFailures = ${outlier.consecutiveFailures})`
    const last = words ?? `${error}${cause !== null ? ` (${cause})` : ''}`
    this.#change(target, `ejected for ${ms} ms after ${streak}, the last: ${last}${ejection > 1 ? `; ejection ${ejection}, time doubled` : ''}`, () => {
      target.ejections = ejection
      target.ejectionsTotal++
      target.ejectedUntil = now + ms
      target.ejectedReason = `ejected after ${streak}, the last: ${last}`
    }, before)
    clearTimeout(this.#ejections.get(target))
    const timer = setTimeout(() => { this.#readmit(target, this.#ejectionOver(target)) }, ms)
    timer.unref()
    this.#ejections.set(target, timer)
  }

  #ejectionOver (target: Target): string {
    const outlier = this.config.outlier!
    return `ejection of ${ejectionTime(outlier, target.ejections)} ms is over; on probation: one more failure ejects it for ${ejectionTime(outlier, target.ejections + 1)} ms`
  }

  /** An ejection is over (its time passed, or a trial succeeded): back in rotation, on probation. */
  #readmit (target: Target, reason: string): void {
    clearTimeout(this.#ejections.get(target))
    this.#ejections.delete(target)
    // `from`: the clock may already have ended the ejection, so state() would not say so.
    this.#change(target, reason, () => {
      target.readmit()
      target.probation = true
    }, 'ejected')
  }

  /** Drains a target; a name's URL drains every address it resolves to now. */
  drain (url: string): void {
    for (const target of this.findAll(url)) {
      if (target.draining) continue
      this.#change(target, 'drained by an operator: no new requests, those in flight finish', () => { target.draining = true })
    }
  }

  enable (url: string): void {
    for (const target of this.findAll(url)) {
      // An address that left the DNS answer is on its way out; no operator brings it back.
      if (target.removed) continue
      this.#change(target, 'enabled by an operator', () => {
        target.draining = false
        target.readmit()
      })
    }
  }

  snapshot (): PoolSnapshot {
    const balancer = this.config.balancer
    const now = Date.now()
    return {
      name: this.name,
      balancer: balancer.kind === 'hash' ? `hash(${balancer.key})` : balancer.kind,
      panic: this.#inPanic,
      targets: this.targets.map((t) => t.snapshot(now)),
      dns: this.#names().map((n) => n.name.status())
    }
  }

  /** How each discovered name stands (for the report and its diagnosis). */
  names (): DiscoveredName[] {
    return this.#names().map((n) => n.name)
  }

  async close (): Promise<void> {
    for (const named of this.#names()) named.name.stop()
    this.#checker?.stop()
    this.credentials?.close()
    for (const waiter of this.#waiters) clearTimeout(waiter.timer)
    this.#waiters.length = 0
    for (const timer of this.#ejections.values()) clearTimeout(timer)
    this.#ejections.clear()
    await Promise.all([...this.targets.map(async (t) => await t.close()), ...this.#closing])
  }

  #onCheck (target: Target, result: CheckResult): void {
    const health = this.config.health!
    target.lastCheck = result
    if (result.ok) {
      target.checksPassed++
      target.checksFailed = 0
      if (target.health !== 'healthy' && (target.health === 'unknown' || target.checksPassed >= health.healthyAfter)) {
        const recovered = target.health === 'unhealthy'
        this.#change(target, recovered
          ? `passed ${target.checksPassed} health checks in a row (health.healthyAfter = ${health.healthyAfter}): ${result.reason}`
          : `passed its first health check: ${result.reason}`, () => {
          target.health = 'healthy'
          target.healthReason = null
          if (recovered) target.warmingSince = Date.now()
        })
      }
      return
    }
    target.checksFailed++
    target.checksPassed = 0
    target.healthReason = result.reason
    if (target.health !== 'unhealthy' && (target.health === 'unknown' || target.checksFailed >= health.unhealthyAfter)) {
      const first = target.health === 'unknown'
      this.#change(target, first
        ? `failed its first health check: ${result.reason}`
        : `failed ${target.checksFailed} health checks in a row (health.unhealthyAfter = ${health.unhealthyAfter}): ${result.reason}`, () => {
        target.health = 'unhealthy'
      })
    }
  }

  /**
   * Applies a change to a target and logs the transition, if its state changed. `from` is for
   * changes the clock already made (an ejection is over the moment its time passes).
   */
  #change (target: Target, reason: string, apply: () => void, from = target.state()): void {
    apply()
    const to = target.state()
    if (from === to) return
    target.since = Date.now()
    const record = { pool: this.name, target: target.hostPort, from, to, reason }
    const msg = `${this.name} target ${target.hostPort}: ${from} → ${to}: ${reason}`
    if (OUT_STATES.has(to) || to === 'failing') this.#log.warn(record, msg)
    else this.#log.info(record, msg)
  }

  #setPanic (panic: boolean): void {
    if (panic === this.#inPanic) return
    this.#inPanic = panic
    if (panic) {
      this.#log.warn({ pool: this.name, panic: true }, `${this.name}: every target is out of rotation; panic is on, so traffic goes to all of them`)
    } else {
      this.#log.info({ pool: this.name, panic: false }, `${this.name}: targets are available again; panic mode is over`)
    }
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
    throw new Error(`fastify-upstream: pool "${this.name}" has no target "${url}" (targets: ${this.targets.map((t) => t.url).join(', ')})`)
  }
}

function safeOrigin (url: string): string | null {
  try {
    return new URL(url).origin
  } catch {
    return null
  }
}
