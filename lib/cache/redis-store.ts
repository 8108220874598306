// Answers kept in Redis, shared by every gateway instance. Each key is a hash of its variants,
// each one `<4-byte length><policy JSON><body>`, expiring with its longest-lived variant. The
// store fails open: a Redis that errs or does not answer within CACHE_STORE_TIMEOUT makes a
// lookup a miss and a write a no-op, never an error for the client. An outage is logged once
// when it starts and once when it ends; the errors in between are counted.
import { Redis, type Cluster } from 'ioredis'
import { once } from 'node:events'
import type { FastifyBaseLogger } from 'fastify'
import { findCode } from '../errors/classify.js'
import type { CacheStore, StoredAnswer } from './store.js'

/** The longest a lookup or a write waits on Redis, in ms. */
export const CACHE_STORE_TIMEOUT = 1000

/** How many keys one SCAN step of a purge asks for, and the most steps it takes. */
const SCAN_COUNT = 500
const SCAN_STEPS = 10_000

/**
 * Keeps one variant and makes the key live as long as its longest-lived variant.
 * KEYS[1] the hash; ARGV: variant, value, ttl (ms).
 */
const SET_SCRIPT = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1`

type CacheClient = (Redis | Cluster) & {
  setUpstreamCacheVariant?: (key: string, variant: string, value: Buffer, ttl: number) => Promise<unknown>
}

export interface CacheStoreHealth {
  state: 'ok' | 'unreachable'
  since: string
  lastError: string | null
  /** Failures during the current outage (or the last one). */
  errors: number
  outages: number
}

export class RedisStore implements CacheStore {
  readonly #client: CacheClient
  readonly #own: Redis | null
  readonly #prefix: string
  #state: CacheStoreHealth['state'] = 'ok'
  #since = Date.now()
  #lastError: string | null = null
  #errors = 0
  #outages = 0
  /** Failed lookups and writes since start (a counter for Prometheus). */
  errorsTotal = 0
  readonly bytes = null

  /** `route`: the route's prefix, for the log line of an outage. */
  constructor (redis: string | Redis | Cluster, prefix: string, private readonly route: string, private readonly log: FastifyBaseLogger) {
    this.#own = typeof redis === 'string' ? connect(redis) : null
    this.#client = (this.#own ?? redis) as CacheClient
    this.#prefix = prefix
    if (typeof this.#client.setUpstreamCacheVariant !== 'function') {
      this.#client.defineCommand('setUpstreamCacheVariant', { numberOfKeys: 1, lua: SET_SCRIPT })
    }
    if (this.#own !== null) {
      // ioredis reports each failed reconnection here; without a listener it prints them all.
      this.#own.on('error', (err: Error) => { this.#failed(err) })
      this.#own.on('ready', () => { this.#worked() })
    }
  }

  get up (): boolean {
    return this.#state === 'ok'
  }

  /** Connects the gateway's own client, waiting at most CACHE_STORE_TIMEOUT (a dead Redis is an outage, not a failed start). */
  async start (): Promise<void> {
    const client = this.#own
    if (client === null) return
    const gaveUp = new AbortController()
    const timer = setTimeout(() => { gaveUp.abort() }, CACHE_STORE_TIMEOUT)
    client.connect().catch(() => {})
    await once(client, 'ready', { signal: gaveUp.signal }).catch(() => {})
    clearTimeout(timer)
  }

  async get (key: string): Promise<StoredAnswer[]> {
    try {
      const fields = await this.#bounded(this.#client.hgetallBuffer(this.#prefix + key))
      this.#worked()
      const now = Date.now()
      const answers: StoredAnswer[] = []
      for (const variant in fields) {
        const answer = decode(variant, fields[variant]!)
        if (answer !== null && answer.deleteAt > now) answers.push(answer)
      }
      return answers
    } catch (err) {
      this.#failed(err)
      throw err
    }
  }

  async set (key: string, answer: StoredAnswer): Promise<void> {
    try {
      await this.#bounded(this.#client.setUpstreamCacheVariant!(this.#prefix + key, answer.variant, encode(answer), Math.max(1, answer.deleteAt - Date.now())))
      this.#worked()
    } catch (err) {
      this.#failed(err)
      throw err
    }
  }

  async purge (prefix: string): Promise<number> {
    const match = escapeGlob(this.#prefix + prefix) + '*'
    let cursor = '0'
    let purged = 0
    try {
      for (let step = 0; step < SCAN_STEPS; step++) {
        const [next, keys] = await this.#bounded(this.#client.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT))
        if (keys.length > 0) purged += await this.#bounded(this.#client.del(...keys))
        cursor = next
        if (cursor === '0') break
      }
      this.#worked()
      return purged
    } catch (err) {
      this.#failed(err)
      throw err
    }
  }

  snapshot (): CacheStoreHealth {
    return { state: this.#state, since: new Date(this.#since).toISOString(), lastError: this.#lastError, errors: this.#errors, outages: this.#outages }
  }

  close (): void {
    this.#own?.disconnect()
  }

  /** A user's client may queue commands while disconnected: nothing waits past the timeout. */
  async #bounded<T> (command: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(Object.assign(new Error(`no answer within ${CACHE_STORE_TIMEOUT} ms`), { code: 'ETIMEDOUT' })) }, CACHE_STORE_TIMEOUT)
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

  #failed (err: unknown): void {
    this.#errors++
    this.errorsTotal++
    if (this.#state === 'unreachable') return
    this.#state = 'unreachable'
    this.#since = Date.now()
    this.#errors = 1
    this.#outages++
    this.#lastError = describe(err)
    this.log.warn({ cacheStore: 'unreachable', route: this.route, cause: findCode(err), error: this.#lastError },
      `cache store (Redis) of route ${this.route} failed: ${this.#lastError}; lookups are misses and nothing is stored until it answers again. Further errors are counted, not logged, until it recovers`)
  }

  #worked (): void {
    if (this.#state === 'ok') return
    const ms = Date.now() - this.#since
    this.#state = 'ok'
    this.#since = Date.now()
    this.log.info({ cacheStore: 'ok', route: this.route, outageMs: ms, errors: this.#errors },
      `cache store (Redis) of route ${this.route} answers again after ${(ms / 1000).toFixed(1)} s unreachable; ${this.#errors} errors during the outage (the first was: ${this.#lastError ?? '?'})`)
  }
}

function encode (answer: StoredAnswer): Buffer {
  const meta = Buffer.from(JSON.stringify({ policy: answer.policy, deleteAt: answer.deleteAt }))
  const length = Buffer.allocUnsafe(4)
  length.writeUInt32BE(meta.length)
  return Buffer.concat([length, meta, answer.body])
}

/** A stored variant, or null for a value this version cannot read (it is then a miss). */
function decode (variant: string, value: Buffer): StoredAnswer | null {
  try {
    const length = value.readUInt32BE(0)
    const meta = JSON.parse(value.subarray(4, 4 + length).toString()) as { policy: StoredAnswer['policy'], deleteAt: number }
    return { policy: meta.policy, deleteAt: meta.deleteAt, variant, body: value.subarray(4 + length) }
  } catch {
    return null
  }
}

function escapeGlob (text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => '\\' + c)
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
    connectTimeout: CACHE_STORE_TIMEOUT,
    commandTimeout: CACHE_STORE_TIMEOUT,
    // Try again every second at most, forever: recovery is noticed within a second.
    retryStrategy: (times: number) => Math.min(times * 100, 1000)
  })
}
