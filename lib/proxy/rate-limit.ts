// Rate limits on the proxied routes: @fastify/rate-limit with the user's options, counting in
// memory or, with rateLimit.redis, in Redis shared by every gateway instance (the stores are in
// rate-limit-counts.ts), guarded so a dead Redis never holds a request up.
import { once } from 'node:events'
import { Redis } from 'ioredis'
import type { Cluster } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { RateLimitConfig } from '../options/config.js'
import { GuardedStore, PerGatewayRoute, STORE_TIMEOUT, StoreHealth } from './rate-limit-store.js'
import { MemoryCounts, RedisCounts } from './rate-limit-counts.js'

export class RateLimiter {
  /** Null when counts live in memory: nothing there can fail. */
  readonly health: StoreHealth | null
  /** A client the gateway opened from a URL (closed with the app); a user's client is not ours. */
  readonly #own: Redis | null
  readonly #client: Redis | Cluster | null

  constructor (private readonly config: RateLimitConfig, log: FastifyBaseLogger) {
    this.#own = typeof config.redis === 'string' ? connect(config.redis) : null
    this.#client = this.#own ?? (config.redis as Redis | Cluster | null)
    this.health = this.#client === null ? null : new StoreHealth(log, config.onStoreError)
    if (this.#own !== null && this.health !== null) {
      const health = this.health
      // ioredis reports each failed reconnection here; without a listener it prints them all.
      this.#own.on('error', (err: Error) => health.failed(err))
      this.#own.on('ready', () => health.worked())
    }
  }

  /** The options @fastify/rate-limit is registered with. */
  pluginOptions (): Record<string, unknown> {
    const { plugin } = this.config
    const options: Record<string, unknown> = { ...plugin, skipOnError: this.config.onStoreError === 'allow' }
    // A store of the user's own is used as it is.
    if (plugin.store !== undefined) return options
    const client = this.#client
    const health = this.health
    // @fastify/rate-limit calls `new store(itsSettings)`; a constructor may hand back another object.
    options.store = function GatewayStore (settings: { continueExceeding: boolean, exponentialBackoff: boolean }) {
      if (client === null || health === null) return new PerGatewayRoute(new MemoryCounts(settings.continueExceeding, settings.exponentialBackoff, plugin.cache as number | undefined))
      const redis = new RedisCounts(settings.continueExceeding, settings.exponentialBackoff, client, plugin.nameSpace as string | undefined)
      return new GuardedStore(new PerGatewayRoute(redis), health)
    }
    return options
  }

  /**
   * Connects the gateway's own client, waiting at most STORE_TIMEOUT: a Redis that is down at
   * start is an outage like any other (logged, and the gateway starts anyway).
   */
  async start (): Promise<void> {
    const client = this.#own
    if (client === null) return
    const gaveUp = new AbortController()
    const timer = setTimeout(() => gaveUp.abort(), STORE_TIMEOUT)
    // The 'error' listener has already counted a failure; ioredis keeps reconnecting.
    client.connect().catch(() => {})
    await once(client, 'ready', { signal: gaveUp.signal }).catch(() => {})
    clearTimeout(timer)
  }

  close (): void {
    this.#own?.disconnect()
  }
}

function connect (url: string): Redis {
  return new Redis(url, {
    // Nothing connects before the app is ready (`start`), so a failed registration leaves no socket.
    lazyConnect: true,
    // ioredis 6 opens with HELLO 3 (RESP3) by default. The counts need nothing RESP3 adds, and
    // RESP2 is what every Redis and Redis-speaking proxy answers, with one round trip less.
    protocol: 2,
    // While disconnected, a command fails at once instead of waiting in a queue; one in flight
    // when the connection drops fails then, and a stalled one after commandTimeout.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: STORE_TIMEOUT,
    commandTimeout: STORE_TIMEOUT,
    // Try again every second at most, forever: recovery is noticed within a second.
    retryStrategy: (times: number) => Math.min(times * 100, 1000)
  })
}
