// What the recorder is told of each finished exchange and what it keeps: the shapes the
// recorder, the metrics, the story store and the pages share (a leaf, so none imports another
// for them).
import type { AttemptRecord } from '../errors/failure.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'

/** The last failure of one error type in a pool. */
export interface ErrorExample {
  count: number
  requestId: string
  at: string
  target: string | null
  cause: string | null
}

/** One failed or retried request, as the lookup page tells it. */
export interface RequestStory {
  id: string
  at: string
  method: string
  route: string
  pool: string
  attempts: readonly AttemptRecord[]
  /** The answer the client got (for a cut response, the status it had already received). */
  answer: { status: number, error: ProxyErrorType | null, cause: string | null, blame: string | null, note: string | null }
  ms: number
  /** Each target's state when the request ended. */
  poolState: ReadonlyArray<{ target: string, state: string }>
  /** The answer's Cache-Status when it came from the cache (a stale answer for a failure). */
  cache?: string
}

/** What the recorder needs to know of a finished request. */
export interface Ending {
  id: string
  method: string
  route: string
  pool: string
  /** `host:port` of the last target tried, if any (null for an address that has left its pool). */
  target: string | null
  status: number
  ms: number
  attempts: readonly AttemptRecord[]
  /** Reads each target's state now; called only for a request that is kept. */
  poolState: () => Array<{ target: string, state: string }>
  /** The answer's Cache-Status when it came from the cache. */
  cache?: string
}

/** The map's value for `key`, made by `make` the first time. */
export function entry<K, V> (map: Map<K, V>, key: K, make: () => V): V {
  let value = map.get(key)
  if (value === undefined) {
    value = make()
    map.set(key, value)
  }
  return value
}

/** WebSocket tunnels of a pool or a target, since the gateway started. */
export interface TunnelCounts {
  /** Handshakes the upstream accepted (101): tunnels opened. */
  opened: number
  /** Tunnels open now. */
  open: number
  /** Handshakes that failed: the gateway answered with a failure (no target, refused, timeout…). */
  failed: number
  /** Handshakes the upstream answered with something else than 101 (its refusal went to the client). */
  refused: number
}

/** What becomes of a WebSocket handshake or tunnel. */
export type TunnelEvent = 'opened' | 'closed' | 'failed' | 'refused'
