// Request stories shared through Redis (status.store), so the id a visitor quotes from any
// instance's error page is found from any instance. Redis is a second copy, never the only
// one: every instance keeps its own ring too, and while Redis is down (or slow) the gateway
// fails open to that ring. An outage is logged once when it starts and once when it ends;
// the failures in between are counted, for the status page and the metrics.
import type { Cluster, Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { StoryStoreConfig } from '../options/config.js'
import type { RequestStory } from './records.js'
import { REDIS_TIMEOUT, StoreClient, type OutageSnapshot } from '../redis.js'

/** The longest a save or a lookup waits on Redis, in ms. */
export const STORY_STORE_TIMEOUT = REDIS_TIMEOUT

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

export type StoryStoreSnapshot = OutageSnapshot

export class StoryStore {
  readonly #redis: StoreClient<StoryClient>
  readonly #prefix: string
  readonly #list: string

  constructor (private readonly config: StoryStoreConfig, private readonly keep: number, log: FastifyBaseLogger) {
    this.#redis = new StoreClient<StoryClient>(config.redis, log, {
      field: 'storyStore',
      down: (error) => `request story store (Redis, status.store) failed: ${error}; stories are kept on this instance only until it answers again. Further errors are counted, not logged, until it recovers`,
      up: (seconds, errors, first) => `request story store (Redis, status.store) answers again after ${seconds} s unreachable; ${errors} errors during the outage (the first was: ${first})`
    })
    // One hash tag for every key, so the script's keys share a slot on a Redis Cluster too.
    this.#prefix = `${config.prefix}{stories}:id:`
    this.#list = `${config.prefix}{stories}:ids`
    const client = this.#redis.client
    if (typeof client.saveUpstreamStory !== 'function') {
      client.defineCommand('saveUpstreamStory', { numberOfKeys: 2, lua: SAVE_SCRIPT })
    }
  }

  get up (): boolean {
    return this.#redis.up
  }

  /** Failed saves and lookups since start (a counter for Prometheus). */
  get errorsTotal (): number {
    return this.#redis.errorsTotal
  }

  /** Connects the gateway's own client, waiting at most STORY_STORE_TIMEOUT (a dead Redis is an outage, not a failed start). */
  async start (): Promise<void> {
    await this.#redis.start()
  }

  /** Keeps a story in Redis, in the background: the request it tells of has been answered already. */
  save (story: RequestStory): void {
    const ttl = this.config.ttl
    this.#redis.run(this.#redis.client.saveUpstreamStory!(this.#prefix + story.id, this.#list, JSON.stringify(story), ttl, this.keep, story.id, this.#prefix)).catch(() => {})
  }

  /** The story with this id, or null when Redis has none, or does not answer (fail open). */
  async find (id: string): Promise<RequestStory | null> {
    try {
      const json = await this.#redis.run(this.#redis.client.get(this.#prefix + id))
      return json === null ? null : JSON.parse(json) as RequestStory
    } catch {
      return null
    }
  }

  snapshot (): StoryStoreSnapshot {
    return this.#redis.snapshot()
  }

  close (): void {
    this.#redis.close()
  }
}
