// The rate limiter's shared store, guarded: every count @fastify/rate-limit asks of Redis either
// answers within STORE_TIMEOUT or fails, so no request waits on a dead or stalled Redis. An
// outage is told once (warn when it starts, info when the store answers again) and is visible
// on the status report; the errors in between are counted, not logged.
import type { FastifyBaseLogger } from 'fastify'
import { GATEWAY_CODES, GatewayError, findCode } from '../errors/classify.js'

/** The longest a request waits for its count, in ms: past it, the store counts as failed. */
export const STORE_TIMEOUT = 1000

export interface Count {
  current: number
  ttl: number
}

export type IncrCallback = (err: Error | null, result: Count | null) => void

/**
 * A store as @fastify/rate-limit's `store` option documents it: `incr` counts a request, `read`
 * tells the count without one (`createRateLimit`'s `{ increment: false }`), `child` makes the
 * store of a route with a limit of its own.
 */
export interface LimitStore {
  incr: (key: string, callback: IncrCallback, timeWindow: number, max: number) => void
  read: (key: string, callback: IncrCallback, timeWindow: number, max: number) => void
  child: (routeOptions: Record<string, unknown>) => LimitStore
}

export interface RateLimitStoreSnapshot {
  state: 'ok' | 'unreachable'
  /** When the store last changed state (or the gateway started). */
  since: string
  onStoreError: 'allow' | 'deny'
  /** The error that began the current outage (or the last one, once over). */
  lastError: string | null
  /** Failures counted during the current outage (or the last one): the first is logged, not the rest. */
  errors: number
  /** Outages since the gateway started. */
  outages: number
}

/** Up or down, and since when: the one place an outage is logged. */
export class StoreHealth {
  #state: RateLimitStoreSnapshot['state'] = 'ok'
  #since = Date.now()
  #lastError: string | null = null
  #errors = 0
  #errorsTotal = 0
  #outages = 0

  constructor (private readonly log: FastifyBaseLogger, readonly onStoreError: 'allow' | 'deny') {}

  get up (): boolean {
    return this.#state === 'ok'
  }

  /** Failed counts since the gateway started (for Prometheus: a counter only grows). */
  get errorsTotal (): number {
    return this.#errorsTotal
  }

  failed (err: unknown): void {
    this.#errors++
    this.#errorsTotal++
    if (this.#state === 'unreachable') return
    this.#state = 'unreachable'
    this.#since = Date.now()
    this.#errors = 1
    this.#outages++
    this.#lastError = describeError(err)
    const then = this.onStoreError === 'allow'
      ? 'requests are let through without a limit until it answers again (rateLimit.onStoreError "allow")'
      : 'rate-limited requests get 503 until it answers again (rateLimit.onStoreError "deny")'
    this.log.warn({ rateLimitStore: 'unreachable', cause: findCode(err), error: this.#lastError, onStoreError: this.onStoreError },
      `rate limit store (Redis) failed: ${this.#lastError}; ${then}. Further errors are counted, not logged, until it recovers`)
  }

  worked (): void {
    if (this.#state === 'ok') return
    const ms = Date.now() - this.#since
    this.#state = 'ok'
    this.#since = Date.now()
    this.log.info({ rateLimitStore: 'ok', outageMs: ms, errors: this.#errors },
      `rate limit store (Redis) answers again after ${(ms / 1000).toFixed(1)} s unreachable; ${this.#errors} errors during the outage (the first was: ${this.#lastError ?? '?'})`)
  }

  snapshot (): RateLimitStoreSnapshot {
    return {
      state: this.#state,
      since: new Date(this.#since).toISOString(),
      onStoreError: this.onStoreError,
      lastError: this.#lastError,
      errors: this.#errors,
      outages: this.#outages
    }
  }
}

/**
 * A store whose every count ends within `timeout` ms. A failure is reported to `health` and
 * passed on as a gateway error: @fastify/rate-limit lets the request through (`skipOnError`,
 * from onStoreError "allow") or throws it to the route's error handler ("deny").
 */
export class GuardedStore implements LimitStore {
  constructor (private readonly inner: LimitStore, private readonly health: StoreHealth, private readonly timeout = STORE_TIMEOUT) {}

  incr (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
    this.#guard((done) => this.inner.incr(key, done, timeWindow, max), callback)
  }

  read (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
    this.#guard((done) => this.inner.read(key, done, timeWindow, max), callback)
  }

  #guard (ask: (done: IncrCallback) => void, callback: IncrCallback): void {
    let settled = false
    const finish: IncrCallback = (err, result) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err === null) {
        this.health.worked()
        callback(null, result)
        return
      }
      this.health.failed(err)
      callback(new GatewayError(GATEWAY_CODES.rateLimitStore, `the rate limit store failed: ${err.message}`, { cause: err }), null)
    }
    const timer = setTimeout(() => finish(new GatewayError('ETIMEDOUT', `no answer within ${this.timeout} ms`), null), this.timeout)
    timer.unref()
    try {
      ask(finish)
    } catch (err) {
      finish(err instanceof Error ? err : new Error(String(err)), null)
    }
  }

  child (routeOptions: Record<string, unknown>): LimitStore {
    return new GuardedStore(this.inner.child(routeOptions), this.health, this.timeout)
  }
}

/**
 * One count per gateway route. A `routes[]` entry is two Fastify routes (its prefix and what
 * lies below it), and @fastify/rate-limit gives each Fastify route with a limit of its own a
 * count of its own: without this, `/shop` and `/shop/x` would each allow `max`.
 */
export class PerGatewayRoute implements LimitStore {
  readonly #children = new Map<string, LimitStore>()

  constructor (private readonly inner: LimitStore) {}

  incr (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
    this.inner.incr(key, callback, timeWindow, max)
  }

  read (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
    this.inner.read(key, callback, timeWindow, max)
  }

  child (routeOptions: Record<string, unknown>): LimitStore {
    const route = routeOptions.routeInfo as { method?: unknown, config?: { upstream?: { prefix?: string } } } | undefined
    const prefix = route?.config?.upstream?.prefix
    // A limit made with app.rateLimit() or createRateLimit() belongs to no route of ours.
    if (route === undefined || prefix === undefined) return this.inner.child(routeOptions)
    let child = this.#children.get(prefix)
    if (child === undefined) {
      // The Redis counts name a route's keys after its method and url: the prefix stands for both.
      child = this.inner.child({ ...routeOptions, routeInfo: { method: route.method, url: prefix } })
      this.#children.set(prefix, child)
    }
    return child
  }
}

function describeError (err: unknown): string {
  const code = findCode(err)
  const message = err instanceof Error ? err.message : String(err)
  return code !== null && !message.includes(code) ? `${message} (${code})` : message
}
