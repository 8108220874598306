// What the gateway's own Redis stores share (request stories, the route caches): a client that
// never makes a request wait in a queue, commands bounded in time, and an outage told once when
// it starts and once when it ends, with the failures in between counted.
import { Redis, type Cluster } from 'ioredis'
import { once } from 'node:events'
import type { FastifyBaseLogger } from 'fastify'
import { findCode } from './errors/classify.js'

/** The longest a command of a store waits on Redis, in ms. */
export const REDIS_TIMEOUT = 1000

export interface OutageSnapshot {
  state: 'ok' | 'unreachable'
  /** When the store last changed state (or the gateway started). */
  since: string
  /** The error that began the current outage (or the last one, once over). */
  lastError: string | null
  /** Failures during the current outage (or the last one). */
  errors: number
  outages: number
}

/** What an outage's two log records say: `field` marks them (`{ [field]: 'unreachable' | 'ok' }`). */
export interface OutageWords {
  field: string
  /** Fields added to both records (e.g. the route). */
  context?: Record<string, unknown>
  down: (error: string) => string
  up: (seconds: string, errors: number, first: string) => string
}

/** A Redis store's client: the gateway's own (from a URL, closed with the app) or the user's. */
export class StoreClient<C extends Redis | Cluster = Redis | Cluster> {
  readonly client: C
  readonly #own: Redis | null
  #state: OutageSnapshot['state'] = 'ok'
  #since = Date.now()
  #lastError: string | null = null
  #errors = 0
  #outages = 0
  /** Failed commands since start (a counter for Prometheus). */
  errorsTotal = 0

  constructor (redis: string | Redis | Cluster, private readonly log: FastifyBaseLogger, private readonly words: OutageWords) {
    this.#own = typeof redis === 'string' ? connect(redis) : null
    this.client = (this.#own ?? redis) as C
    if (this.#own !== null) {
      // ioredis reports each failed reconnection here; without a listener it prints them all.
      this.#own.on('error', (err: Error) => { this.failed(err) })
      this.#own.on('ready', () => { this.worked() })
    }
  }

  get up (): boolean {
    return this.#state === 'ok'
  }

  /** Connects the gateway's own client, waiting at most REDIS_TIMEOUT (a dead Redis is an outage, not a failed start). */
  async start (): Promise<void> {
    const client = this.#own
    if (client === null) return
    const gaveUp = new AbortController()
    const timer = setTimeout(() => { gaveUp.abort() }, REDIS_TIMEOUT)
    // The 'error' listener has already counted the failure; ioredis keeps reconnecting.
    client.connect().catch(() => {})
    await once(client, 'ready', { signal: gaveUp.signal }).catch(() => {})
    clearTimeout(timer)
  }

  close (): void {
    this.#own?.disconnect()
  }

  /**
   * Runs a command: it answers within REDIS_TIMEOUT or fails (a user's client may queue commands
   * while disconnected). Its success or failure feeds the outage state.
   */
  async run<T> (command: Promise<T>): Promise<T> {
    try {
      const result = await bounded(command)
      this.worked()
      return result
    } catch (err) {
      this.failed(err)
      throw err
    }
  }

  snapshot (): OutageSnapshot {
    return { state: this.#state, since: new Date(this.#since).toISOString(), lastError: this.#lastError, errors: this.#errors, outages: this.#outages }
  }

  failed (err: unknown): void {
    this.#errors++
    this.errorsTotal++
    if (this.#state === 'unreachable') return
    this.#state = 'unreachable'
    this.#since = Date.now()
    this.#errors = 1
    this.#outages++
    this.#lastError = describe(err)
    this.log.warn({ [this.words.field]: 'unreachable', ...this.words.context, cause: findCode(err), error: this.#lastError }, this.words.down(this.#lastError))
  }

  worked (): void {
    if (this.#state === 'ok') return
    const ms = Date.now() - this.#since
    this.#state = 'ok'
    this.#since = Date.now()
    this.log.info({ [this.words.field]: 'ok', ...this.words.context, outageMs: ms, errors: this.#errors }, this.words.up((ms / 1000).toFixed(1), this.#errors, this.#lastError ?? '?'))
  }
}

async function bounded<T> (command: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(Object.assign(new Error(`no answer within ${REDIS_TIMEOUT} ms`), { code: 'ETIMEDOUT' })) }, REDIS_TIMEOUT)
    timer.unref()
  })
  // A command that fails after the timeout has won must not go unhandled.
  command.catch(() => {})
  try {
    return await Promise.race([command, late])
  } finally {
    clearTimeout(timer)
  }
}

function describe (err: unknown): string {
  if (err instanceof Error) {
    const code = findCode(err)
    return code !== null && !err.message.includes(code) ? `${code}: ${err.message}` : err.message
  }
  return String(err)
}

function connect (url: string): Redis {
  return new Redis(url, {
    // Nothing connects before the app is ready (`start`), so a failed registration leaves no socket.
    lazyConnect: true,
    // While disconnected a command fails at once instead of waiting in a queue.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: REDIS_TIMEOUT,
    commandTimeout: REDIS_TIMEOUT,
    // Try again every second at most, forever: recovery is noticed within a second.
    retryStrategy: (times: number) => Math.min(times * 100, 1000)
  })
}
