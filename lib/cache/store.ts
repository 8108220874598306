// Where answers are kept. Every store has the same small interface (the shape of undici's
// CacheStore: get, write, delete), keyed by the gateway's own key (key.ts), which undici's
// `CacheKey` has no room for (the pool chosen). An answer's variants (Vary) live under one key.
import { LRUCache } from 'lru-cache'
import type { PolicyObject } from './policy.js'

/** One stored answer: its policy (status, headers, the request headers its Vary names) and body. */
export interface StoredAnswer {
  policy: PolicyObject
  body: Buffer
  /** Which variant of the key it is (variant.ts), so a new answer replaces its own. */
  variant: string
  /** Epoch ms after which the store may forget it (the longest stale window included). */
  deleteAt: number
}

export interface CacheStore {
  /**
   * The variants stored under `key` and not past their deleteAt; at once where the store can
   * (memory: a hit then costs no turn of the event loop). Rejects when the store fails.
   */
  get: (key: string) => StoredAnswer[] | Promise<StoredAnswer[]>
  /** Keeps `answer` under `key`, replacing the variant it is. Rejects when the store fails. */
  set: (key: string, answer: StoredAnswer) => Promise<void>
  /** Drops every key starting with `prefix`; resolves with how many keys went. */
  purge: (prefix: string) => Promise<number>
  /** Bytes held, where the store knows (memory); null otherwise. */
  readonly bytes: number | null
  close: () => void
}

/** Bytes an answer takes: its body and, roughly, its headers. */
export function sizeOf (answer: StoredAnswer): number {
  let size = answer.body.length + 64
  for (const name in answer.policy.resh) size += name.length + String(answer.policy.resh[name]).length + 4
  return size
}

function live (answers: StoredAnswer[] | undefined, now: number): StoredAnswer[] {
  if (answers === undefined) return []
  return answers.filter((answer) => answer.deleteAt > now)
}

/**
 * Answers in this process, bounded by `maxBytes`: the least recently used key goes first
 * (lru-cache decides; undici's MemoryCacheStore evicts half of every key instead, not by use).
 */
export class MemoryStore implements CacheStore {
  readonly #lru: LRUCache<string, StoredAnswer[]>

  constructor (maxBytes: number) {
    this.#lru = new LRUCache<string, StoredAnswer[]>({
      maxSize: maxBytes,
      sizeCalculation: (answers) => Math.max(1, answers.reduce((sum, answer) => sum + sizeOf(answer), 0))
    })
  }

  get bytes (): number {
    return this.#lru.calculatedSize
  }

  get (key: string): StoredAnswer[] {
    const now = Date.now()
    const answers = this.#lru.get(key)
    if (answers === undefined) return []
    const kept = live(answers, now)
    if (kept.length === 0) this.#lru.delete(key)
    return kept
  }

  async set (key: string, answer: StoredAnswer): Promise<void> {
    const now = Date.now()
    const others = live(this.#lru.peek(key), now).filter((old) => old.variant !== answer.variant)
    const answers = [...others, answer]
    const deleteAt = Math.max(...answers.map((a) => a.deleteAt))
    this.#lru.set(key, answers, { ttl: Math.max(1, deleteAt - now) })
  }

  async purge (prefix: string): Promise<number> {
    let purged = 0
    for (const key of [...this.#lru.keys()]) {
      if (key.startsWith(prefix) && this.#lru.delete(key)) purged++
    }
    return purged
  }

  close (): void {
    this.#lru.clear()
  }
}
