// Every caching route's cache, made at registration: their stores (started with the app,
// closed with it), purge by route, and what the status page and the metrics read.
import { unknownCachingRoute } from '../errors/codes.js'
import type { FastifyBaseLogger } from 'fastify'
import type { RouteConfig } from '../options/config.js'
import { RouteCache, type CacheCounts, type RouteCacheContext } from './cache.js'
import { MemoryStore, type CacheStore } from './store.js'
import { RedisStore, type CacheStoreHealth } from './redis-store.js'

export interface CacheSnapshot {
  route: string
  store: 'memory' | 'redis'
  /** Bytes held (memory store); null for Redis (shared, and measured there). */
  bytes: number | null
  maxBytes: number
  counts: CacheCounts
  /** The Redis store's health; null for memory. */
  storeHealth: CacheStoreHealth | null
}

export class Caches {
  readonly #byRoute = new Map<string, RouteCache>()
  readonly #redis: RedisStore[] = []

  constructor (private readonly log: FastifyBaseLogger) {}

  create (route: RouteConfig, context: RouteCacheContext): RouteCache {
    const config = route.cache!
    let store: CacheStore
    if (config.store === 'memory') {
      store = new MemoryStore(config.maxBytes)
    } else {
      const redis = new RedisStore(config.store, `${config.prefix}{cache}:`, route.prefix, this.log)
      this.#redis.push(redis)
      store = redis
    }
    const cache = new RouteCache(config, store, context)
    this.#byRoute.set(route.prefix, cache)
    return cache
  }

  get size (): number {
    return this.#byRoute.size
  }

  async start (): Promise<void> {
    await Promise.all(this.#redis.map(async (store) => await store.start()))
  }

  close (): void {
    for (const cache of this.#byRoute.values()) cache.store.close()
  }

  /** Whether `route` (a prefix) is one of these caching routes. */
  has (route: string): boolean {
    return this.#byRoute.has(route)
  }

  /** The prefixes of these caching routes. */
  routes (): string[] {
    return [...this.#byRoute.keys()]
  }

  /** Drops the stored answers of `route` (its prefix), or of one path of it; resolves with how many keys went. */
  async purge (route: string, path?: string): Promise<number> {
    const cache = this.#byRoute.get(route)
    if (cache === undefined) throw unknownCachingRoute(route, this.routes())
    return await cache.purge(path)
  }

  snapshot (): CacheSnapshot[] {
    return [...this.#byRoute.values()].map((cache) => ({
      route: cache.context.route,
      store: cache.store instanceof RedisStore ? 'redis' : 'memory',
      bytes: cache.store.bytes,
      maxBytes: cache.config.maxBytes,
      counts: { ...cache.counts },
      storeHealth: cache.store instanceof RedisStore ? cache.store.snapshot() : null
    }))
  }
}
