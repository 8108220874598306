// Request stories shared through Redis (status.store), so the id a visitor quotes from any
// instance's error page is found from any instance. Redis is a second copy, never the only
// one: every instance keeps its own ring too, and while Redis is down (or slow) the gateway
// fails open to that ring. An outage is logged once when it starts and once when it ends;
// the failures in between are counted, for the status page and the metrics.
import { Redis, type Cluster } from 'ioredis'
import { once } from 'node:events'
import type { FastifyBaseLogger } from 'fastify'
import type { StoryStoreConfig } from '../options/config.js'
import type { RequestStory } from './records.js'
import { findCode } from '../errors/classify.js'

/** The longest a save or a lookup waits on Redis, in ms. */
export const STORY_STORE_TIMEOUT = 1000

/**
 * Saves one story and keeps the list of the last `keep` ids: the oldest beyond it go, their
 * stories with them, in one step so two instances never trim each other's count wrong.
 * KEYS[1] the story, KEYS[2] the list of ids; ARGV: json, ttl (ms), keep, id, prefix.
 */
const SAVE_SCRIPT = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local keep = tonumber(ARGV[3])
while redis.call('LLEN', KEYS[2]) > keep do
  local old = redis.call('RPOP', KEYS[2])
  if old ~= ARGV[4] then redis.call('DEL', ARGV[5] .. old) end
end
return 1`

type StoryClient = (Redis | Cluster) & {
  saveUpstreamStory?: (story: string, list: string, json: string, ttl: number, keep: number, id: string, prefix: string) => Promise<unknown>
}

export interface StoryStoreSnapshot {
  state: 'ok' | 'unreachable'
  /** When the store last changed state (or the gateway started). */
  since: string
  /** The error that began the current outage (or the last one, once over). */
  lastError: string | null
  /** Failures during the current outage (or the last one). */
  errors: number
  outages: number
}

export class StoryStore {
  readonly #client: StoryClient
  /** A client the gateway opened from a URL (closed with the app); a user's client is not ours. */
  readonly #own: Redis | null
  readonly #prefix: string
  readonly #list: string
  #state: StoryStoreSnapshot['state'] = 'ok'
  #since = Date.now()
  #lastError: string | null = null
  #errors = 0
  #outages = 0
  /** Failed saves and lookups since start (a counter for Prometheus). */
  errorsTotal = 0

  constructor (private readonly config: StoryStoreConfig, private readonly keep: number, private readonly log: FastifyBaseLogger) {
    this.#own = typeof config.redis === 'string' ? connect(config.redis) : null
    this.#client = (this.#own ?? config.redis) as StoryClient
    // One hash tag for every key, so the script's keys share a slot on a Redis Cluster too.
    this.#prefix = `${config.prefix}{stories}:id:`
    this.#list = `${config.prefix}{stories}:ids`
    if (typeof this.#client.saveUpstreamStory !== 'function') {
      this.#client.defineCommand('saveUpstreamStory', { numberOfKeys: 2, lua: SAVE_SCRIPT })
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

  /** Connects the gateway's own client, waiting at most STORY_STORE_TIMEOUT (a dead Redis is an outage, not a failed start). */
  async start (): Promise<void> {
    const client = this.#own
    if (client === null) return
    const gaveUp = new AbortController()
    const timer = setTimeout(() => { gaveUp.abort() }, STORY_STORE_TIMEOUT)
    // The 'error' listener has already counted the failure; ioredis keeps reconnecting.
    client.connect().catch(() => {})
    await once(client, 'ready', { signal: gaveUp.signal }).catch(() => {})
    clearTimeout(timer)
  }

  /** Keeps a story in Redis, in the background: the request it tells of has been answered already. */
  save (story: RequestStory): void {
    const ttl = this.config.ttl
    const saving = this.#client.saveUpstreamStory!(this.#prefix + story.id, this.#list, JSON.stringify(story), ttl, this.keep, story.id, this.#prefix)
    this.#bounded(saving).then(() => { this.#worked() }, (err: unknown) => { this.#failed(err) })
  }

  /** The story with this id, or null when Redis has none, or does not answer (fail open). */
  async find (id: string): Promise<RequestStory | null> {
    try {
      const json = await this.#bounded(this.#client.get(this.#prefix + id))
      this.#worked()
      return json === null ? null : JSON.parse(json) as RequestStory
    } catch (err) {
      this.#failed(err)
      return null
    }
  }

  snapshot (): StoryStoreSnapshot {
    return { state: this.#state, since: new Date(this.#since).toISOString(), lastError: this.#lastError, errors: this.#errors, outages: this.#outages }
  }

  close (): void {
    this.#own?.disconnect()
  }

  /** A user's client may queue commands while disconnected: nothing waits past the timeout. */
  async #bounded<T> (command: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(Object.assign(new Error(`no answer within ${STORY_STORE_TIMEOUT} ms`), { code: 'ETIMEDOUT' })) }, STORY_STORE_TIMEOUT)
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
    this.log.warn({ storyStore: 'unreachable', cause: findCode(err), error: this.#lastError },
      `request story store (Redis, status.store) failed: ${this.#lastError}; stories are kept on this instance only until it answers again. Further errors are counted, not logged, until it recovers`)
  }

  #worked (): void {
    if (this.#state === 'ok') return
    const ms = Date.now() - this.#since
    this.#state = 'ok'
    this.#since = Date.now()
    this.log.info({ storyStore: 'ok', outageMs: ms, errors: this.#errors },
      `request story store (Redis, status.store) answers again after ${(ms / 1000).toFixed(1)} s unreachable; ${this.#errors} errors during the outage (the first was: ${this.#lastError ?? '?'})`)
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
    connectTimeout: STORY_STORE_TIMEOUT,
    commandTimeout: STORY_STORE_TIMEOUT,
    // Try again every second at most, forever: recovery is noticed within a second.
    retryStrategy: (times: number) => Math.min(times * 100, 1000)
  })
}
