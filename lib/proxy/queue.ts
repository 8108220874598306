// Waiting in a pool's line for a target with room (limits.maxConcurrent, connections.perTarget),
// shared by an HTTP exchange and a WebSocket handshake: the same bound, the same words.
import { performance } from 'node:perf_hooks'
import type { UpstreamPool } from '../pool/pool.js'

export class RoomWait {
  /** Milliseconds spent waiting so far, across every wait of this request. */
  waitedMs = 0
  /** When the current wait must end; null between waits that start afresh. */
  #deadline: number | null = null

  /** A try went out: a later wait (before a retry) starts afresh, as the try did. */
  reset (): void {
    this.#deadline = null
  }

  /**
   * Waits in the pool's line: `ready` when a request of the pool ends and room may be free;
   * `failed`, with operator words, when limits.maxPending already wait or limits.queueTimeout
   * passes. queueTimeout bounds the whole wait: one woken without finding room it may use goes
   * back to the head of the line with what is left of it. Returns the wait's cancel handle, or
   * null when it failed at once.
   */
  wait (pool: UpstreamPool, subject: string, ready: () => void, failed: (why: string) => void): { cancel: () => void } | null {
    const { limits } = pool.config
    const queuedAt = performance.now()
    const why = `Every target that may take this ${subject} has ${pool.roomWords()}`
    const timedOut = (): void => { failed(`${why}, and this ${subject} waited limits.queueTimeout (${limits.queueTimeout} ms) for room.`) }
    const again = this.#deadline !== null
    if (!again) this.#deadline = queuedAt + limits.queueTimeout
    const left = this.#deadline! - queuedAt
    if (left <= 0) {
      timedOut()
      return null
    }
    const waiter = pool.enqueue(() => {
      this.waitedMs += performance.now() - queuedAt
      ready()
    }, () => {
      this.waitedMs += performance.now() - queuedAt
      timedOut()
    }, left, again)
    if (waiter === null) failed(`${why}, and limits.maxPending (${limits.maxPending}) requests already wait.`)
    return waiter
  }
}
