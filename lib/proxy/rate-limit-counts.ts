// Where the rate limiter keeps its counts: in this process's memory, or in Redis shared by every
// gateway instance. Both are stores in the sense @fastify/rate-limit documents for its `store`
// option (a constructor, `incr`, `read` and `child`), written here rather than taken from the
// plugin's files, which it does not export: a minor release may move or change them.
//
// The counting rules are the plugin's own, so a limit means the same with either store and with
// the plugin used bare. In Redis the keys are named as the plugin names them
// (`<nameSpace><client>`, and `<nameSpace><method><url>-<client>` for a route's own limit) and
// count the same way, so gateways of an older release, which used the plugin's store, share
// their counts with these during a rolling upgrade. test/rate-limit-counts.test.ts holds both
// to that.
import type { Cluster, Redis } from 'ioredis'
import type { Count, IncrCallback, LimitStore } from './rate-limit-store.js'

/** The plugin's default for `nameSpace`. */
export const DEFAULT_NAMESPACE = 'fastify-rate-limit-'
/** The plugin's default for `cache`: how many clients one in-memory store remembers. */
export const DEFAULT_CACHE = 5000

/** The largest window exponential backoff reaches, in ms (Number.MAX_SAFE_INTEGER). */
const LONGEST = Number.MAX_SAFE_INTEGER

/** The route settings @fastify/rate-limit hands to `child`: its options merged with the route's. */
export interface ChildSettings {
  continueExceeding?: boolean
  exponentialBackoff?: boolean
  cache?: number
  routeInfo?: { method?: unknown, url?: unknown }
}

/** A client's count in memory: how many requests since its window began, and how long it lasts. */
interface Window {
  current: number
  ttl: number
  startedAt: number
}

/**
 * Counts in memory, for the most recently seen `size` clients: one past that forgets the
 * client seen longest ago (which then starts a new window when it comes back).
 */
export class MemoryCounts implements LimitStore {
  // A Map keeps insertion order: re-inserting a client on each count keeps the oldest first.
  readonly #windows = new Map<string, Window>()

  constructor (
    private readonly continueExceeding: boolean,
    private readonly exponentialBackoff: boolean,
    private readonly size = DEFAULT_CACHE
  ) {}

  incr (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
    const now = Date.now()
    let window = this.#windows.get(key)
    if (window === undefined || window.startedAt + timeWindow <= now) {
      window = { current: 1, ttl: timeWindow, startedAt: now }
    } else {
      window.current++
      const over = window.current > max
      if (over && this.continueExceeding) {
        // Each request over the limit starts the window again.
        window.ttl = timeWindow
        window.startedAt = now
      } else if (over && this.exponentialBackoff) {
        // The window doubles with each request over the limit.
        window.ttl = Math.min(timeWindow * 2 ** (window.current - max - 1), LONGEST)
        window.startedAt = now
      } else {
        window.ttl = timeWindow - (now - window.startedAt)
      }
    }
    this.#windows.delete(key)
    this.#windows.set(key, window)
    if (this.#windows.size > this.size) this.#windows.delete(this.#windows.keys().next().value!)
    callback(null, { current: window.current, ttl: window.ttl })
  }

  /** The count as it stands, changing nothing (for `createRateLimit(...)(request, { increment: false })`). */
  read (key: string, callback: IncrCallback, timeWindow: number): void {
    const window = this.#windows.get(key)
    const now = Date.now()
    if (window === undefined || window.startedAt + timeWindow <= now) {
      callback(null, { current: 0, ttl: 0 })
      return
    }
    callback(null, { current: window.current, ttl: timeWindow - (now - window.startedAt) })
  }

  child (settings: ChildSettings): MemoryCounts {
    return new MemoryCounts(settings.continueExceeding === true, settings.exponentialBackoff === true, settings.cache ?? DEFAULT_CACHE)
  }
}

// One script per count, so that the increment, the expiry and the answer are one step however
// many gateways count at once. ARGV: the window (ms), max, continueExceeding and
// exponentialBackoff ('1' or '0'). Answers { count, ms until the window ends }.
const COUNT = `
local count = redis.call('INCR', KEYS[1])
local window = tonumber(ARGV[1])
local over = count > tonumber(ARGV[2])
if count == 1 or (over and ARGV[3] == '1') then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return { count, window }
end
if over and ARGV[4] == '1' then
  local longer = math.min(window * 2 ^ (count - tonumber(ARGV[2]) - 1), ${LONGEST})
  -- Written as an integer whatever the server's Lua number format (5.1's own: 9.007199254741e+15).
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', longer))
  return { count, longer }
end
return { count, redis.call('PTTL', KEYS[1]) }
`

// The count as it stands, without touching it.
const READ = `
local count = redis.call('GET', KEYS[1])
if not count then return { 0, 0 } end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = 0 end
return { tonumber(count), ttl }
`

// Names of the commands defined on the client (ioredis's defineCommand: EVALSHA, and the script
// itself the first time a server has not seen it). Ours, so a client of the user's that counts
// with @fastify/rate-limit elsewhere keeps its own.
const COUNT_COMMAND = 'fastifyUpstreamRateLimitCount'
const READ_COMMAND = 'fastifyUpstreamRateLimitRead'

type Script = (key: string, ...args: Array<string | number>) => Promise<unknown>

/** Counts in Redis, shared by every gateway that uses the same server and nameSpace. */
export class RedisCounts implements LimitStore {
  readonly #count: Script
  readonly #read: Script

  constructor (
    private readonly continueExceeding: boolean,
    private readonly exponentialBackoff: boolean,
    private readonly client: Redis | Cluster,
    private readonly prefix = DEFAULT_NAMESPACE
  ) {
    const commands = client as unknown as Record<string, Script | undefined>
    if (typeof commands[COUNT_COMMAND] !== 'function') client.defineCommand(COUNT_COMMAND, { numberOfKeys: 1, lua: COUNT })
    if (typeof commands[READ_COMMAND] !== 'function') client.defineCommand(READ_COMMAND, { numberOfKeys: 1, lua: READ })
    this.#count = commands[COUNT_COMMAND]!.bind(client)
    this.#read = commands[READ_COMMAND]!.bind(client)
  }

  incr (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
    answer(this.#count(this.prefix + key, timeWindow, max, this.continueExceeding ? '1' : '0', this.exponentialBackoff ? '1' : '0'), callback)
  }

  /** The count as it stands, changing nothing (for `createRateLimit(...)(request, { increment: false })`). */
  read (key: string, callback: IncrCallback): void {
    answer(this.#read(this.prefix + key), callback)
  }

  child (settings: ChildSettings): RedisCounts {
    const route = settings.routeInfo ?? {}
    return new RedisCounts(settings.continueExceeding === true, settings.exponentialBackoff === true, this.client,
      `${this.prefix}${String(route.method)}${String(route.url)}-`)
  }
}

function answer (reply: Promise<unknown>, callback: IncrCallback): void {
  reply.then((result) => {
    const [current, ttl] = result as [number, number]
    const count: Count = { current, ttl }
    callback(null, count)
  }, (err: unknown) => callback(err instanceof Error ? err : new Error(String(err)), null))
}
