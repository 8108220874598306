// The admission queue: requests waiting for a target with room (limits.maxConcurrent,
// connections.perTarget), oldest first, each with its own queueTimeout timer.

interface Waiter {
  ready: () => void
  timer: NodeJS.Timeout
}

export class AdmissionQueue {
  readonly #waiters: Waiter[] = []

  /** `maxPending`: limits.maxPending, how many may wait at once. */
  constructor (private readonly maxPending: number) {}

  /** Requests waiting now. */
  get length (): number {
    return this.#waiters.length
  }

  /**
   * Waits in line for room: `ready` when a request somewhere in the pool ends, `timedOut` after
   * `timeoutMs`. Null when maxPending requests already wait. A request that was woken but found
   * no room it may use (`again`) goes back to the head of the line, not the tail, and is not
   * turned away for a full line: it was already in it.
   */
  enqueue (ready: () => void, timedOut: () => void, timeoutMs: number, again = false): { cancel: () => void } | null {
    if (!again && this.#waiters.length >= this.maxPending) return null
    const waiter: Waiter = {
      ready,
      timer: setTimeout(() => {
        this.#remove(waiter)
        timedOut()
      }, timeoutMs)
    }
    if (again) this.#waiters.unshift(waiter)
    else this.#waiters.push(waiter)
    return { cancel: () => { this.#remove(waiter) } }
  }

  /** Room was made: the oldest waiter may go. */
  next (): void {
    const waiter = this.#waiters.shift()
    if (waiter === undefined) return
    clearTimeout(waiter.timer)
    waiter.ready()
  }

  /** The pool closes: nobody is woken, no timer is left. */
  clear (): void {
    for (const waiter of this.#waiters) clearTimeout(waiter.timer)
    this.#waiters.length = 0
  }

  #remove (waiter: Waiter): void {
    clearTimeout(waiter.timer)
    const i = this.#waiters.indexOf(waiter)
    if (i >= 0) this.#waiters.splice(i, 1)
  }
}
