// Active health checks (as HAProxy's `check` and Envoy's health checking): every interval, with
// jitter so many gateways do not probe in lock-step, one request per target; rise and fall
// (healthyAfter, unhealthyAfter) decide a target's health. Failures go through the request
// classifier, so a failed check reads like a failed request.
import { performance } from 'node:perf_hooks'
import type { HealthConfig, PoolConfig } from '../options/config.js'
import type { CheckResult, Target } from './target.js'
import { classify, GATEWAY_CODES } from '../errors/classify.js'
import { makeFailure } from '../errors/failure.js'
import type { Credentials } from './credentials.js'
import type { Transitions } from './transitions.js'

/** How much of a body `expect.body` looks at. */
const BODY_LIMIT = 64 * 1024
/** Intervals vary by ±10%. */
const JITTER = 0.1

export class HealthChecker {
  readonly #timers = new Map<Target, NodeJS.Timeout>()
  readonly #inFlight = new Set<AbortController>()
  /** The targets checked; discovery adds and removes them while the gateway runs. */
  readonly #targets = new Set<Target>()
  #started = false
  #stopped = false

  constructor (
    private readonly pool: PoolConfig & { health: HealthConfig },
    /** Where each target's change of health is logged. */
    private readonly transitions: Transitions,
    /** The pool's credentials (auth): checks carry them as requests do. */
    private readonly credentials: Credentials | null = null,
    private readonly random: () => number = Math.random
  ) {}

  start (): void {
    this.#started = true
    for (const target of this.#targets) this.#first(target)
  }

  /** A target to check from now on (at once, if checks have started). */
  add (target: Target): void {
    this.#targets.add(target)
    if (this.#started) this.#first(target)
  }

  /** A target that left the pool: no more checks; a result still under way is dropped. */
  remove (target: Target): void {
    this.#targets.delete(target)
    clearTimeout(this.#timers.get(target))
    this.#timers.delete(target)
  }

  /**
   * The first check goes out at once (spread over a tenth of the interval), so a target
   * leaves the `unknown` state quickly.
   */
  #first (target: Target): void {
    this.#schedule(target, this.random() * this.pool.health.interval * JITTER)
  }

  stop (): void {
    this.#stopped = true
    for (const timer of this.#timers.values()) clearTimeout(timer)
    this.#timers.clear()
    for (const controller of this.#inFlight) controller.abort()
  }

  #schedule (target: Target, delay: number): void {
    if (this.#stopped || !this.#targets.has(target)) return
    const timer = setTimeout(() => {
      this.#round(target).then((result) => {
        if (this.#stopped || !this.#targets.has(target)) return
        if (result !== null) this.#judge(target, result)
        const { interval } = this.pool.health
        this.#schedule(target, interval * (1 - JITTER + 2 * JITTER * this.random()))
      }, () => {})
    }, delay)
    timer.unref()
    this.#timers.set(target, timer)
  }

  /**
   * One round for a target: its check with the pool's credentials, or null (no verdict) when
   * no token could be had. That failure is the token function's, logged once by Credentials;
   * it says nothing of the target.
   */
  async #round (target: Target): Promise<CheckResult | null> {
    let auth: Record<string, string> = {}
    if (this.credentials !== null) {
      try {
        auth = await this.credentials.headers()
      } catch {
        return null
      }
    }
    const result = await this.check(target, auth)
    // A 401 to the gateway's token: have it refreshed, as a request's 401 would.
    if (result.status === 401 && auth.authorization !== undefined) this.credentials!.unauthorized(auth.authorization.slice('Bearer '.length))
    return result
  }

  /**
   * Rise and fall: a target's first check decides at once whether it is healthy; after that,
   * health.healthyAfter passed checks in a row bring it back and health.unhealthyAfter failed
   * ones take it out.
   */
  #judge (target: Target, result: CheckResult): void {
    const { healthyAfter, unhealthyAfter } = this.pool.health
    target.recordCheck(result)
    const first = target.health === 'unknown'
    if (result.ok) {
      if (target.health === 'healthy' || (!first && target.checksPassed < healthyAfter)) return
      this.transitions.change(target, first
        ? `passed its first health check: ${result.reason}`
        : `passed ${target.checksPassed} health checks in a row (health.healthyAfter = ${healthyAfter}): ${result.reason}`,
      () => { target.setHealth('healthy') })
      return
    }
    if (target.health === 'unhealthy' || (!first && target.checksFailed < unhealthyAfter)) return
    this.transitions.change(target, first
      ? `failed its first health check: ${result.reason}`
      : `failed ${target.checksFailed} health checks in a row (health.unhealthyAfter = ${unhealthyAfter}): ${result.reason}`,
    () => { target.setHealth('unhealthy') })
  }

  /** One check: GET health.path (with `auth`, the credential headers), then status and body against `expect`. */
  async check (target: Target, auth: Record<string, string> = {}): Promise<CheckResult> {
    const { health, timeouts } = this.pool
    const started = performance.now()
    const controller = new AbortController()
    this.#inFlight.add(controller)
    const timer = setTimeout(() => {
      controller.abort(Object.assign(new Error(`no answer within health.timeout (${health.timeout} ms)`), { code: GATEWAY_CODES.totalTimeout }))
    }, health.timeout)
    const done = (result: Omit<CheckResult, 'ms' | 'at'>): CheckResult => ({ ...result, ms: Math.round(performance.now() - started), at: Date.now() })
    let answered = false
    try {
      const res = await target.client(timeouts.connect === false ? health.timeout : Math.min(timeouts.connect, health.timeout)).request({
        origin: target.origin,
        path: health.path,
        method: 'GET',
        headers: Object.assign({ host: target.hostHeader, 'user-agent': 'fastify-upstream health check' }, auth),
        signal: controller.signal,
        headersTimeout: health.timeout,
        bodyTimeout: health.timeout
      })
      answered = true
      const body = health.expect.body === null ? (await res.body.dump(), '') : await readLimited(res.body)
      if (!health.expect.status(res.statusCode)) {
        return done({ ok: false, status: res.statusCode, error: null, cause: null, reason: `status ${res.statusCode}, expected ${health.expect.statusText}` })
      }
      const expected = health.expect.body
      if (expected !== null && !(typeof expected === 'string' ? body.includes(expected) : expected.test(body))) {
        return done({ ok: false, status: res.statusCode, error: null, cause: null, reason: `body did not match ${typeof expected === 'string' ? JSON.stringify(expected) : String(expected)}` })
      }
      return done({ ok: true, status: res.statusCode, error: null, cause: null, reason: `status ${res.statusCode}` })
    } catch (err) {
      const reason = controller.signal.aborted ? controller.signal.reason as unknown : err
      const verdict = classify(reason, { connected: answered, requestSent: answered, responseStarted: answered })
      const error = verdict.error === 'client_aborted' ? 'proxy_internal_error' : verdict.error
      const words = verdict.cause === GATEWAY_CODES.totalTimeout || (reason as { code?: string }).code === GATEWAY_CODES.totalTimeout
        ? `no answer within health.timeout (${health.timeout} ms)`
        : `${makeFailure(error, { phase: verdict.phase, ms: 0 }).title.toLowerCase()}${verdict.cause !== null ? ` (${verdict.cause})` : ''}`
      return done({ ok: false, status: null, error, cause: verdict.cause, reason: words })
    } finally {
      clearTimeout(timer)
      this.#inFlight.delete(controller)
    }
  }
}

async function readLimited (body: AsyncIterable<Buffer> & { destroy: () => void }): Promise<string> {
  let text = ''
  for await (const chunk of body) {
    text += chunk.toString()
    if (text.length >= BODY_LIMIT) {
      body.destroy()
      break
    }
  }
  return text.slice(0, BODY_LIMIT)
}
