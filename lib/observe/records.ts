// What the recorder is told of each finished exchange and what it keeps: the shapes the
// recorder, the metrics, the story store and the pages share (a leaf, so none imports another
// for them).
import type { AttemptRecord } from '../errors/failure.js'
import type { Phase, ProxyErrorType } from '../errors/taxonomy.js'
import type { RoutedBy } from '../routing/router.js'
import type { MirrorOutcome } from '../proxy/mirror.js'

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

/** One timed request to one target (app.upstream.probe and the status page's probe). */
export interface ProbeResult {
  pool: string
  target: string
  /** The URL requested: the target with the pool's health.path, or `/`. */
  url: string
  at: string
  ok: boolean
  /** The upstream's status, when it answered. */
  status: number | null
  error: ProxyErrorType | null
  phase: Phase | null
  cause: string | null
  /** Milliseconds from the start to the end of each phase; null for one not reached or not done. */
  ms: { dns: number | null, connect: number | null, tls: number | null, firstByte: number | null, total: number }
}

/** What a route that chooses its pool (match, split) or copies requests (mirror) did, since start. */
export interface RouteCounts {
  /** Requests per pool, by how the pool was chosen. */
  pools: Map<string, Record<RoutedBy, number>>
  /** Copies to the mirror pool, by outcome; null without a mirror. */
  mirror: ({ pool: string } & Record<MirrorOutcome, number>) | null
}
