// A route's cache: consulted before the request picks a target, and again when its exchange
// fails. A fresh stored answer goes to the client without the upstream; concurrent misses for
// one key wait for one upstream request (`lock`); a stale one is revalidated, served while it
// is refreshed in the background (stale-while-revalidate), or stands in for a failure
// (stale-if-error). What is stored and for how long is the policy's (policy.ts) to say.
import { randomBytes } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ExchangeCache, Exchange } from '../proxy/exchange.js'
import type { CacheConfig } from '../options/config.js'
import { forwardResponseHeaders, type ResponseHeaders } from '../proxy/forwarding.js'
import type { Failure } from '../errors/failure.js'
import { cacheKey, purgePrefix, variantOf } from './key.js'
import { keepFor, policyOf, requestRefusesStored, restorePolicy, shouldStore, staleWhileRevalidateSeconds, usableOnError, type Policy, type StaleWindows } from './policy.js'
import type { CacheStore, StoredAnswer } from './store.js'
import { forwardStatus, hitStatus, sendStored, type Forwarded } from './answer.js'

/** How long a request waits for another one fetching its key before it goes itself (nginx's proxy_cache_lock_timeout). */
export const LOCK_TIMEOUT = 5000

/** The header a background refresh carries, with a secret only this process knows. */
const REFRESH_HEADER = 'x-fastify-upstream-refresh'

/** Conditional fields a revalidation adds to the request (RFC 9111 §4.3.1). */
const VALIDATORS = ['if-none-match', 'if-modified-since'] as const

export interface CacheCounts {
  /** Fresh answers given from the cache. */
  hits: number
  /** Requests that went upstream (no entry, no matching variant, stale, or the client asked). */
  misses: number
  /** Stale answers given in place of a failure. */
  staleIfError: number
  /** Stale answers given while a background refresh runs. */
  staleWhileRevalidate: number
  /** Stale answers the upstream confirmed (304). */
  revalidated: number
  /** Requests that waited for another request fetching their key. */
  collapsed: number
  /** Answers stored. */
  stored: number
  /** Answers not stored for their size (maxEntryBytes). */
  tooLarge: number
  /** Lookups and writes the store failed. */
  storeErrors: number
}

/** What the route does with a request the cache sends upstream. */
export type Forward = (cache: ExchangeCache | null, validators: Record<string, string> | null) => void

/** How the route reports a failure answered with a stale answer (one warn record, counted, its story). */
export type StaleReport = (request: FastifyRequest, failure: Failure, exchange: Exchange | null, cacheStatus: string, status: number) => void

export interface RouteCacheContext {
  app: FastifyInstance
  route: string
  proxyName: string
  /** `Via` as the gateway adds it to a relayed answer. */
  via: string
  /** What the relay does to an answer's headers (Location rewriting), so a stored one is the same. */
  prepare: (headers: ResponseHeaders, request: FastifyRequest) => void
  /** The Proxy-Status member of a stale answer given for `failure`. */
  proxyStatus: (request: FastifyRequest, failure: Failure) => string
  staleServed: StaleReport
}

interface Lock {
  done: Promise<void>
  release: () => void
}

export class RouteCache {
  readonly counts: CacheCounts = { hits: 0, misses: 0, staleIfError: 0, staleWhileRevalidate: 0, revalidated: 0, collapsed: 0, stored: 0, tooLarge: 0, storeErrors: 0 }
  readonly windows: StaleWindows
  readonly #locks = new Map<string, Lock>()
  readonly #refreshing = new Set<string>()
  readonly #token = randomBytes(16).toString('hex')

  constructor (readonly config: CacheConfig, readonly store: CacheStore, readonly context: RouteCacheContext) {
    this.windows = { staleIfError: config.staleIfError, staleWhileRevalidate: config.staleWhileRevalidate }
  }

  /** Answers `request` from the cache, or has the route `forward` it with what the cache needs. */
  handle (request: FastifyRequest, reply: FastifyReply, pool: string, forward: Forward): void {
    this.#handle(request, reply, pool, forward).catch((err: unknown) => {
      // A bug here must not leave the client waiting: the request goes on without the cache.
      request.log.error({ err, route: this.context.route }, 'the cache failed to handle a request; it goes upstream uncached')
      if (!reply.sent && !reply.raw.destroyed) forward(null, null)
    })
  }

  async purge (path?: string): Promise<number> {
    return await this.store.purge(purgePrefix(this.context.route, path))
  }

  async #handle (request: FastifyRequest, reply: FastifyReply, pool: string, forward: Forward): Promise<void> {
    const name = this.context.proxyName
    const method = request.method
    // Taken off any request: only this process's own refresh may carry it, and never upstream.
    const refresh = this.#takeRefreshMark(request.headers)
    if (method !== 'GET' && method !== 'HEAD') {
      reply.header('cache-status', forwardStatus(name, 'method', null, false))
      forward(null, null)
      return
    }
    const key = cacheKey(this.context.route, request.url, pool, request.headers.host, method)
    let collapsed = false
    for (let round = 0; ; round++) {
      let answers: StoredAnswer[] = []
      let storeDown = false
      try {
        const got = this.store.get(key)
        answers = Array.isArray(got) ? got : await got
      } catch {
        this.counts.storeErrors++
        storeDown = true
      }
      // The client went away while the store was asked.
      if (reply.raw.destroyed) return
      const stored = answers.find((answer) => answer.variant === variantOf(answer.policy.resh.vary, request.headers)) ?? null
      const policy = stored === null ? null : restorePolicy(stored.policy)
      let fwd: Forwarded = answers.length === 0 ? 'miss' : stored === null ? 'vary-miss' : 'stale'
      if (stored !== null && policy !== null && !refresh) {
        const verdict = policy.evaluateRequest({ method, url: request.url, headers: request.headers })
        if (verdict.response !== undefined && verdict.revalidation === undefined) {
          this.counts.hits++
          sendStored(reply, stored, policy, hitStatus(name))
          return
        }
        if ((verdict.response !== undefined && verdict.revalidation?.synchronous === false) || this.#routeAllowsStaleWhileRevalidate(request.headers, policy)) {
          this.counts.staleWhileRevalidate++
          sendStored(reply, stored, policy, hitStatus(name, 'stale-while-revalidate'))
          this.#refresh(key, request)
          return
        }
        if (requestRefusesStored(request.headers)) fwd = 'request'
      }
      const held = this.#locks.get(key)
      if (this.config.lock && held !== undefined && round === 0 && !refresh) {
        // Another request is fetching this key: its answer is likely to serve this one too.
        this.counts.collapsed++
        collapsed = true
        await waitFor(held.done, LOCK_TIMEOUT)
        continue
      }
      this.counts.misses++
      const release = this.config.lock && held === undefined ? this.#lock(key) : null
      const validators = stored !== null && policy !== null ? validatorsFor(policy, request) : null
      // Said again with the upstream's status once it answers; this stays on the gateway's own error answer.
      reply.header('cache-status', forwardStatus(name, fwd, null, false, collapsed, storeDown ? 'store-unavailable' : null))
      forward(new CacheExchange(this, key, request, reply, stored, validators !== null, { fwd, collapsed, storeDown, refresh }, release), validators)
      return
    }
  }

  /** The route's staleWhileRevalidate covers this stale answer, and the client set no conditions of its own. */
  #routeAllowsStaleWhileRevalidate (headers: IncomingHttpHeaders, policy: Policy): boolean {
    if (this.windows.staleWhileRevalidate === 0 || headers['cache-control'] !== undefined || headers.pragma !== undefined) return false
    return policy.stale() && policy.age() < policy.maxAge() + staleWhileRevalidateSeconds(policy, this.windows)
  }

  #lock (key: string): () => void {
    let release!: () => void
    const done = new Promise<void>((resolve) => { release = resolve })
    const lock: Lock = { done, release }
    this.#locks.set(key, lock)
    return () => {
      if (this.#locks.get(key) === lock) this.#locks.delete(key)
      lock.release()
    }
  }

  /** A background refresh of `key`, at most one at a time: the request again, through the app. */
  #refresh (key: string, request: FastifyRequest): void {
    if (this.#refreshing.has(key)) return
    this.#refreshing.add(key)
    const headers: Record<string, string | string[] | undefined> = { ...request.headers, [REFRESH_HEADER]: this.#token }
    for (const name of ['connection', 'content-length', 'transfer-encoding', 'expect', 'upgrade']) Reflect.deleteProperty(headers, name)
    // Through the app, so the refresh picks a target, retries and is logged as any request is.
    this.context.app.inject({ method: request.method as 'GET', url: request.url, headers: headers as Record<string, string> })
      .catch(() => {})
      .finally(() => { this.#refreshing.delete(key) })
  }

  /** Whether this request is this process's own background refresh (its mark is taken off either way). */
  #takeRefreshMark (headers: IncomingHttpHeaders): boolean {
    const mark = headers[REFRESH_HEADER]
    if (mark === undefined) return false
    Reflect.deleteProperty(headers, REFRESH_HEADER)
    return mark === this.#token
  }

  /** A stored answer for a failure, when its stale-if-error window allows (then it is sent). */
  serveStale (request: FastifyRequest, reply: FastifyReply, stored: StoredAnswer | null, failure: Failure, exchange: Exchange | null): boolean {
    if (stored === null || failure.status < 500 || failure.blame === 'client' || reply.sent || reply.raw.headersSent) return false
    const policy = restorePolicy(stored.policy)
    if (!usableOnError(policy, this.windows)) return false
    this.counts.staleIfError++
    const cacheStatus = hitStatus(this.context.proxyName, 'stale-if-error')
    sendStored(reply, stored, policy, cacheStatus, this.context.proxyStatus(request, failure))
    this.context.staleServed(request, failure, exchange, cacheStatus, stored.policy.st)
    return true
  }

  /** Keeps an answer; a store that fails is counted (and logged once by the store), never the client's problem. */
  async save (key: string, answer: StoredAnswer): Promise<void> {
    try {
      await this.store.set(key, answer)
      this.counts.stored++
    } catch {
      this.counts.storeErrors++
    }
  }
}

/** The conditional fields that revalidate `policy`'s answer (the policy chooses them), or null. */
function validatorsFor (policy: Policy, request: FastifyRequest): Record<string, string> | null {
  const headers = policy.revalidationHeaders({ method: request.method, url: request.url, headers: request.headers })
  let out: Record<string, string> | null = null
  for (const name of VALIDATORS) {
    const value = headers[name]
    if (typeof value === 'string') (out ??= {})[name] = value
  }
  return out
}

async function waitFor (done: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([done, new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })])
  clearTimeout(timer)
}

interface Why {
  fwd: Forwarded
  collapsed: boolean
  storeDown: boolean
  refresh: boolean
}

/**
 * The cache's part in one exchange: the upstream's answer is stored as it streams to the client
 * (up to maxEntryBytes; past it, what was kept is dropped), a 304 to a revalidation serves the
 * stored answer, and a 5xx or a failure is answered with the stale one where its window allows.
 */
class CacheExchange implements ExchangeCache {
  #chunks: Buffer[] | null = null
  #size = 0
  #policy: Policy | null = null
  #variant = ''
  #ended = false
  #release: (() => void) | null

  constructor (
    private readonly cache: RouteCache,
    private readonly key: string,
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly stored: StoredAnswer | null,
    /** The request went with the stored answer's validators. */
    private readonly revalidating: boolean,
    private readonly why: Why,
    release: (() => void) | null
  ) {
    this.#release = release
  }

  response (exchange: Exchange, status: number, upstream: IncomingHttpHeaders): 'relay' | 'revalidated' | 'stale' {
    const name = this.cache.context.proxyName
    const stored = this.stored
    if (status === 304 && stored !== null && this.revalidating) {
      const old = restorePolicy(stored.policy)
      const { policy, modified, matches } = old.revalidatedPolicy(this.#policyRequest(), { status, headers: forwardResponseHeaders(upstream, this.cache.context.via) })
      // A 304 that does not match the stored answer answers the client's own condition: it goes on.
      if (matches && !modified) {
        this.cache.counts.revalidated++
        sendStored(this.reply, stored, policy, forwardStatus(name, this.why.fwd, 304, true, this.why.collapsed))
        this.#keep({ ...stored, policy: policy.toObject(), deleteAt: Date.now() + keepFor(policy, this.cache.windows) })
        return 'revalidated'
      }
    }
    if (status >= 500) {
      if (this.cache.serveStale(this.request, this.reply, stored, exchange.statusFailure(status, upstream), exchange)) {
        this.#done()
        return 'stale'
      }
    }
    const headers = forwardResponseHeaders(upstream, this.cache.context.via)
    this.cache.context.prepare(headers, this.request)
    const policy = policyOf(this.#policyRequest(), status, headers)
    const length = Number(headers['content-length'] ?? 0)
    const storing = !this.why.storeDown && shouldStore(policy) && !(length > this.cache.config.maxEntryBytes)
    if (storing) {
      this.#policy = policy
      this.#variant = variantOf(headers.vary, this.request.headers)
      this.#chunks = []
    } else if (length > this.cache.config.maxEntryBytes) {
      this.cache.counts.tooLarge++
    }
    this.reply.header('cache-status', forwardStatus(name, this.why.fwd, status, storing, this.why.collapsed, this.why.storeDown ? 'store-unavailable' : null))
    return 'relay'
  }

  data (chunk: Buffer): void {
    const chunks = this.#chunks
    if (chunks === null) {
      // A background refresh whose answer will not be stored has nothing more to do.
      if (this.why.refresh) this.reply.raw.destroy()
      return
    }
    this.#size += chunk.length
    if (this.#size > this.cache.config.maxEntryBytes) {
      // Too large to keep: what was held goes now, the rest streams on to the client only.
      this.#chunks = null
      this.cache.counts.tooLarge++
      return
    }
    chunks.push(chunk)
  }

  end (): void {
    const chunks = this.#chunks
    const policy = this.#policy
    this.#chunks = null
    if (chunks === null || policy === null) {
      this.#done()
      return
    }
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
    this.#keep({ policy: policy.toObject(), body, variant: this.#variant, deleteAt: Date.now() + keepFor(policy, this.cache.windows) })
  }

  /** The exchange failed before an answer: the stale answer stands in, where its window allows. */
  failed (exchange: Exchange, failure: Failure): boolean {
    this.#done()
    return this.cache.serveStale(this.request, this.reply, this.stored, failure, exchange)
  }

  settled (): void {
    if (this.#ended) return
    // The exchange ended without the whole answer: nothing of it is kept.
    this.#chunks = null
    this.#done()
  }

  #keep (answer: StoredAnswer): void {
    this.#ended = true
    const release = this.#release
    this.#release = null
    // Waiters look again once the answer is in the store (or the store has failed).
    this.cache.save(this.key, answer).finally(() => { release?.() })
  }

  #done (): void {
    this.#ended = true
    const release = this.#release
    this.#release = null
    release?.()
  }

  #policyRequest (): { method: string, url: string, headers: IncomingHttpHeaders } {
    return { method: this.request.method, url: this.request.url, headers: this.request.headers }
  }
}
