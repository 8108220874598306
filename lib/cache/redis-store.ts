// Answers kept in Redis, shared by every gateway instance. Each key is a hash of its variants,
// each one `<4-byte length><policy JSON><body>`, expiring with its longest-lived variant. The
// store fails open: a Redis that errs or does not answer within a second (REDIS_TIMEOUT) makes a
// lookup a miss and a write a no-op, never an error for the client. An outage is logged once
// when it starts and once when it ends; the errors in between are counted.
import type { Cluster, Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import { StoreClient, type OutageSnapshot } from '../redis.js'
import type { CacheStore, StoredAnswer } from './store.js'

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

export type CacheStoreHealth = OutageSnapshot

export class RedisStore implements CacheStore {
  readonly #redis: StoreClient<CacheClient>
  readonly #prefix: string
  readonly bytes = null

  /** `route`: the route's prefix, for the log records of an outage. */
  constructor (redis: string | Redis | Cluster, prefix: string, route: string, log: FastifyBaseLogger) {
    this.#redis = new StoreClient<CacheClient>(redis, log, {
      field: 'cacheStore',
      context: { route },
      down: (error) => `cache store (Redis) of route ${route} failed: ${error}; lookups are misses and nothing is stored until it answers again. Further errors are counted, not logged, until it recovers`,
      up: (seconds, errors, first) => `cache store (Redis) of route ${route} answers again after ${seconds} s unreachable; ${errors} errors during the outage (the first was: ${first})`
    })
    this.#prefix = prefix
    const client = this.#redis.client
    if (typeof client.setUpstreamCacheVariant !== 'function') {
      client.defineCommand('setUpstreamCacheVariant', { numberOfKeys: 1, lua: SET_SCRIPT })
    }
  }

  get up (): boolean {
    return this.#redis.up
  }

  async start (): Promise<void> {
    await this.#redis.start()
  }

  async get (key: string): Promise<StoredAnswer[]> {
    const fields = await this.#redis.run(this.#redis.client.hgetallBuffer(this.#prefix + key))
    const now = Date.now()
    const answers: StoredAnswer[] = []
    for (const variant in fields) {
      const answer = decode(variant, fields[variant]!)
      if (answer !== null && answer.deleteAt > now) answers.push(answer)
    }
    return answers
  }

  async set (key: string, answer: StoredAnswer): Promise<void> {
    await this.#redis.run(this.#redis.client.setUpstreamCacheVariant!(this.#prefix + key, answer.variant, encode(answer), Math.max(1, answer.deleteAt - Date.now())))
  }

  async purge (prefix: string): Promise<number> {
    const match = escapeGlob(this.#prefix + prefix) + '*'
    const client = this.#redis.client
    let cursor = '0'
    let purged = 0
    for (let step = 0; step < SCAN_STEPS; step++) {
      const [next, keys] = await this.#redis.run(client.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT))
      if (keys.length > 0) purged += await this.#redis.run(client.del(...keys))
      cursor = next
      if (cursor === '0') break
    }
    return purged
  }

  snapshot (): CacheStoreHealth {
    return this.#redis.snapshot()
  }

  close (): void {
    this.#redis.close()
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
