// One upstream target: its address, weight, live counters, what health checks and passive
// observation say of it, and its own keep-alive pool.
import { Pool as UndiciPool, buildConnector } from 'undici'
import { ConnectGate, ConnectTimes, endsFirst, timed } from './connector.js'
import type { PoolConfig, TargetConfig } from '../options/config.js'
import { originOf, type Endpoint } from './discovery.js'

/**
 * How a target stands, most decisive first (see `state()`). `failing`: still in rotation, but
 * its last requests all failed (passive evidence, before outlier detection ejects it).
 */
export type TargetState = 'healthy' | 'failing' | 'unhealthy' | 'unknown' | 'ejected' | 'draining' | 'backup'

/**
 * Failed requests in a row after which a target shows as `failing`: one failure is noise, two
 * with nothing good in between is a pattern an operator should see, even without health checks.
 */
export const FAILING_AFTER = 2
export type Health = 'unknown' | 'healthy' | 'unhealthy'

export interface TargetError {
  /** RFC 9209 error type of the last failure, e.g. `connection_refused`. */
  error: string
  cause: string | null
  at: number
}

/** The outcome of one active health check. */
export interface CheckResult {
  ok: boolean
  /** The status the target answered, if it answered. */
  status: number | null
  /** The error type when the check failed before an answer (as for a request). */
  error: string | null
  cause: string | null
  /** In words: "status 503, expected 2xx", "body did not match /ok/", the failure's title. */
  reason: string
  ms: number
  at: number
}

export interface TargetSnapshot {
  /** The target's URL; for an address of a name, e.g. `http://api.internal:8080 (10.0.0.5)`. */
  url: string
  /** The address a target given by name (or SRV) resolved to; null for a URL with an IP. */
  address: string | null
  weight: number
  backup: boolean
  state: TargetState
  /** ISO time the state began. */
  since: string
  /** Why the target is in this state, in words (null for a healthy target). */
  why: string | null
  health: Health
  lastCheck: (Omit<CheckResult, 'at'> & { at: string }) | null
  ejectedUntil: string | null
  ejections: number
  /** Share of its weight in use while slow start ramps it up (1 = full). */
  weightShare: number
  inFlight: number
  requests: number
  failures: number
  consecutiveFailures: number
  lastError: { error: string, cause: string | null, at: string } | null
  latencyMs: { ewma: number | null }
  /** Connections opened since start, and recent averages of their TCP and TLS set-up (ms). */
  connections: { count: number, tcpMs: number | null, tlsMs: number | null }
}

/** Latency average that forgets: each new sample weighs EWMA_ALPHA. */
const EWMA_ALPHA = 0.2
/** How fast a latency average fades without new samples (e-folding time). */
const LATENCY_DECAY_MS = 10_000
/** The latency sample a failed try counts as (see countFailure). */
const FAILURE_LATENCY_MS = 1000
/** A target warming up under slow start never gets less than this share of its weight. */
const MIN_WARM_SHARE = 0.1
/** SRV weights (0..65535) are kept within the weights targets may have. */
const MAX_WEIGHT = 1000

export class Target {
  /**
   * The target's name in the API, logs and status page: its URL, or for an address a name
   * resolved to, the name's URL and the address, `http://api.internal:8080 (10.0.0.5)`.
   */
  readonly url: string
  /** Where connections go: the URL, or for a resolved address, `http://10.0.0.5:8080`. */
  readonly origin: string
  /** The configured target this one comes from (its `url`): the name, for resolved addresses. */
  readonly source: string
  /** The IP a name resolved to; null for a target whose URL has an IP. */
  readonly address: string | null
  /** SRV records may change a target's weight and priority between lookups. */
  weight: number
  backup: boolean
  /** `host:port` (with ` (ip)` for a resolved address), as an operator reads it in logs and `next-hop`. */
  readonly hostPort: string
  readonly hostHeader: string
  /** Left the DNS answer: drains, then leaves the pool once its requests in flight end. */
  removed = false

  inFlight = 0
  /** Tries whose answer is held back for a slow client (see #resumePaused). */
  readonly paused = new Set<{ resume: () => void }>()
  /** One of the target's connections is ending: no try may pause until it has (#resumePaused). */
  ending = false
  requests = 0
  failures = 0
  lastError: TargetError | null = null
  latencyEwma: number | null = null
  latencySampledAt = 0

  // Active health: what the checks say.
  health: Health
  healthReason: string | null = null
  lastCheck: CheckResult | null = null
  checksPassed = 0
  checksFailed = 0

  // Passive health: what requests say.
  consecutiveFailures = 0
  ejectedUntil: number | null = null
  ejections = 0
  /** Ejections since the gateway started (`ejections` counts those in a row). */
  ejectionsTotal = 0
  ejectedReason: string | null = null
  /** Back from ejection and not yet proven: one failure ejects again. */
  probation = false

  draining = false
  /** When the current state began (for "since when" and slow start). */
  since = Date.now()
  /** Slow start ramps the share of weight from here. */
  warmingSince: number | null = null

  // One undici pool per connect timeout: a route may override `timeouts.connect`, and undici
  // sets the connect timeout per pool, not per request. Almost always there is exactly one.
  readonly #clients = new Map<number, UndiciPool>()
  readonly #connectGate = new ConnectGate()
  /** How long new connections took to open (TCP, TLS), for the status page and diagnosis. */
  readonly connectTimes = new ConnectTimes()
  readonly #pool: PoolConfig
  #configBackup = false

  constructor (config: TargetConfig, pool: PoolConfig, endpoint: Endpoint | null = null) {
    this.source = config.url
    this.#pool = pool
    if (endpoint === null) {
      const url = new URL(config.url)
      this.url = this.origin = config.url
      this.address = null
      this.weight = config.weight
      this.backup = config.backup
      this.hostHeader = url.host
      this.hostPort = `${url.hostname}:${url.port !== '' ? url.port : (url.protocol === 'https:' ? '443' : '80')}`
    } else {
      const protocol = config.srv?.protocol ?? new URL(config.url).protocol
      const defaultPort = protocol === 'https:' ? 443 : 80
      // Host (and so TLS SNI and the certificate check) carry the name, never the address.
      this.hostHeader = endpoint.port === defaultPort ? endpoint.hostname : `${endpoint.hostname}:${endpoint.port}`
      this.origin = originOf(protocol, endpoint.ip, endpoint.port)
      this.address = endpoint.ip
      this.url = `${protocol}//${this.hostHeader} (${endpoint.ip})`
      this.hostPort = `${endpoint.hostname}:${endpoint.port} (${endpoint.ip})`
      this.weight = config.weight
      this.backup = this.#configBackup = config.backup
      this.update(endpoint)
    }
    // Without active checks nothing will ever pass a verdict: a target is presumed healthy.
    this.health = pool.health === null ? 'healthy' : 'unknown'
  }

  /** What a new lookup says of this address (SRV weight and priority may change). */
  update (endpoint: Endpoint): void {
    if (endpoint.weight !== null) this.weight = Math.min(MAX_WEIGHT, Math.max(1, endpoint.weight))
    this.backup = this.#configBackup || endpoint.backup
  }

  state (now = Date.now()): TargetState {
    if (this.draining) return 'draining'
    if (this.isEjected(now)) return 'ejected'
    if (this.health === 'unhealthy') return 'unhealthy'
    if (this.consecutiveFailures >= FAILING_AFTER) return 'failing'
    if (this.health === 'unknown') return 'unknown'
    return this.backup ? 'backup' : 'healthy'
  }

  isEjected (now = Date.now()): boolean {
    return this.ejectedUntil !== null && now < this.ejectedUntil
  }

  /** May take traffic in normal operation (panic mode aside). */
  isAvailable (now = Date.now()): boolean {
    return !this.draining && !this.isEjected(now) && this.health !== 'unhealthy'
  }

  // The pool's parts change a target only through the methods below, each one event in the
  // target's life, so what an event changes is written once.

  /** Back into rotation after an ejection (on probation) or an operator's enable: a fresh streak, warming up. */
  readmit (probation = false): void {
    this.ejectedUntil = null
    this.ejectedReason = null
    this.consecutiveFailures = 0
    this.warmingSince = Date.now()
    if (probation) this.probation = true
  }

  /** Its state changed (the pool logs the transition): "since" counts from now. */
  entered (now = Date.now()): void {
    this.since = now
  }

  /** Left its name's DNS answer: drains, and leaves the pool once its requests in flight end. */
  leaveAnswer (): void {
    this.removed = true
    this.draining = true
  }

  /** Back in its name's answer before it finished draining: it stays, state and all. */
  rejoinAnswer (): void {
    this.removed = false
    this.draining = false
  }

  /** An operator's drain: no new requests, those in flight finish. */
  drain (): void {
    this.draining = true
  }

  /** An operator's enable: back in rotation, any ejection over. */
  enable (): void {
    this.draining = false
    this.readmit()
  }

  /** A new address or a recovered target: slow start ramps its share of traffic up from now. */
  startWarming (now = Date.now()): void {
    this.warmingSince = now
  }

  /** A failed try: counted, its error kept, and slow for latency-aware balancing however fast it came. */
  countFailure (error: string, cause: string | null, now = Date.now()): void {
    this.failures++
    this.consecutiveFailures++
    this.recordLatency(Math.max(FAILURE_LATENCY_MS, 2 * (this.latencyEwma ?? 0)))
    this.lastError = { error, cause, at: now }
  }

  /** A good answer: the failure streak and probation end. */
  countSuccess (): void {
    this.consecutiveFailures = 0
    this.probation = false
  }

  /** Ejected (the `ejection`-th time in a row) until `until`, for `reason`. */
  eject (ejection: number, until: number, reason: string): void {
    this.ejections = ejection
    this.ejectionsTotal++
    this.ejectedUntil = until
    this.ejectedReason = reason
  }

  /** Stayed in rotation long enough: the next ejection is a first one again. */
  forgetEjections (): void {
    this.ejections = 0
  }

  /** An active check's result: the streaks of passed and failed checks. */
  recordCheck (result: CheckResult): void {
    this.lastCheck = result
    if (result.ok) {
      this.checksPassed++
      this.checksFailed = 0
    } else {
      this.checksFailed++
      this.checksPassed = 0
      this.healthReason = result.reason
    }
  }

  /** What active checks now conclude; a target that recovers warms up under slow start. */
  setHealth (health: Health): void {
    if (health === 'healthy') {
      if (this.health === 'unhealthy') this.startWarming()
      this.healthReason = null
    }
    this.health = health
  }

  /** The weight balancers use: ramps from 10% to 100% over `slowStart` after a recovery. */
  effectiveWeight (now = Date.now()): number {
    return this.weight * this.weightShare(now)
  }

  weightShare (now = Date.now()): number {
    const slowStart = this.#pool.slowStart
    if (slowStart === 0 || this.warmingSince === null) return 1
    const share = (now - this.warmingSince) / slowStart
    if (share >= 1) {
      this.warmingSince = null
      return 1
    }
    return Math.max(MIN_WARM_SHARE, share)
  }

  /**
   * One of the target's connections ended (its FIN, or a reset): every try held back on this
   * target goes on before undici sees the end (connector.ts, endsFirst). Those on other
   * connections pause again at their next chunk.
   */
  readonly #resumePaused = (): void => {
    // Resuming reads what the ended socket still holds: that must not pause it again before
    // undici's own listener runs. The listeners of one event run in one go; the flag clears
    // right after them.
    if (!this.ending) queueMicrotask(this.#ended)
    this.ending = true
    for (const held of [...this.paused]) held.resume()
  }

  readonly #ended = (): void => {
    this.ending = false
  }

  client (connectTimeout: number): UndiciPool {
    let client = this.#clients.get(connectTimeout)
    if (client === undefined) {
      const { connections, tls } = this.#pool
      client = new UndiciPool(this.origin, {
        // The gateway keeps within connections.perTarget itself (pool.hasRoom), so a request
        // never waits in undici's queue with its connect timer running.
        connections: Number.isFinite(connections.perTarget) ? connections.perTarget : null,
        keepAliveTimeout: connections.keepAlive,
        keepAliveMaxTimeout: connections.keepAlive,
        pipelining: 1,
        connect: endsFirst(this.#connectGate.wrap(timed(buildConnector({
          timeout: connectTimeout,
          rejectUnauthorized: tls.rejectUnauthorized,
          ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
          ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
          ...(tls.key !== undefined ? { key: tls.key } : {}),
          // A resolved address is reached under its name (undici takes SNI from Host too).
          ...(tls.servername !== undefined ? { servername: tls.servername } : this.address !== null ? { servername: this.hostHeader.replace(/:\d+$/, '') } : {})
        }), (timing) => this.connectTimes.record(timing))), this.#resumePaused)
      })
      this.#clients.set(connectTimeout, client)
    }
    return client
  }

  recordLatency (ms: number): void {
    this.latencyEwma = this.latencyEwma === null ? ms : this.latencyEwma + EWMA_ALPHA * (ms - this.latencyEwma)
    this.latencySampledAt = Date.now()
  }

  /**
   * The latency average as a balancer should see it now: it fades while no sample comes (as
   * Linkerd's peak EWMA), so a target once slow is tried again after a while instead of never.
   */
  decayedLatency (now = Date.now()): number | null {
    if (this.latencyEwma === null) return null
    return this.latencyEwma * Math.exp(-(now - this.latencySampledAt) / LATENCY_DECAY_MS)
  }

  snapshot (now = Date.now()): TargetSnapshot {
    const iso = (ms: number): string => new Date(ms).toISOString()
    const state = this.state(now)
    return {
      url: this.url,
      address: this.address,
      weight: this.weight,
      backup: this.backup,
      state,
      since: iso(this.since),
      why: this.why(state),
      health: this.health,
      lastCheck: this.lastCheck === null ? null : { ...this.lastCheck, at: iso(this.lastCheck.at) },
      ejectedUntil: this.isEjected(now) ? iso(this.ejectedUntil!) : null,
      ejections: this.ejections,
      weightShare: Math.round(this.weightShare(now) * 100) / 100,
      inFlight: this.inFlight,
      requests: this.requests,
      failures: this.failures,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError === null ? null : { error: this.lastError.error, cause: this.lastError.cause, at: iso(this.lastError.at) },
      latencyMs: { ewma: this.latencyEwma === null ? null : Math.round(this.latencyEwma * 10) / 10 },
      connections: this.connectTimes.snapshot()
    }
  }

  /** Why this target is out of rotation (or waiting), in words an operator can act on. */
  why (state = this.state()): string | null {
    const since = new Date(this.since).toISOString()
    switch (state) {
      case 'draining': return this.removed
        ? `no longer in the DNS answer for ${this.source} since ${since}; leaves the pool when its ${this.inFlight} requests in flight end`
        : `drained by an operator since ${since}`
      case 'ejected': return `${this.ejectedReason ?? 'ejected'}; back at ${new Date(this.ejectedUntil!).toISOString()}`
      case 'unhealthy': return `failing health checks since ${since}: ${this.healthReason ?? 'no detail'}`
      case 'unknown': return 'no health check has passed a verdict yet'
      case 'failing': return this.#failingWhy()
      default: return null
    }
  }

  /** "its last 4 requests failed, the last: connection_refused (ECONNREFUSED) at …; still in rotation …" */
  #failingWhy (): string {
    const last = this.lastError
    const what = last === null ? '' : `, the last: ${last.error}${last.cause !== null ? ` (${last.cause})` : ''} at ${new Date(last.at).toISOString()}`
    const outlier = this.#pool.outlier
    const next = outlier === null
      ? 'still in rotation (outlier detection is off)'
      : this.consecutiveFailures >= outlier.consecutiveFailures
        ? `still in rotation: outlier.maxEjectedPercent (${outlier.maxEjectedPercent}) keeps it from being ejected while others are`
        : `still in rotation; ${outlier.consecutiveFailures} in a row eject it (outlier.consecutiveFailures)`
    return `its last ${this.consecutiveFailures} requests failed${what}; ${next}`
  }

  async close (): Promise<void> {
    const clients = [...this.#clients.values()]
    this.#clients.clear()
    // destroy, not close: in-flight upstream exchanges are cut when the gateway shuts down,
    // as their clients' connections are.
    await Promise.all(clients.map(async (client) => await client.destroy()))
  }
}
