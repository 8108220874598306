// How a pool's `protocol` becomes undici options, for each use a target's connections have.
//
// undici 7 writes a streamed request body over HTTP/2 only on a connection with no other
// stream in flight (client-h2.js, `busy`): put on a shared connection, a POST or a gRPC call
// would wait behind every long response on it (an SSE stream, a server-streaming call), never
// going to another connection. So a try with a streamed body goes on connections of its own,
// one stream at a time, and bodiless tries share connections, `connections.streams` at a time.
// WebSocket handshakes stay HTTP/1.1: undici would try RFC 8441's extended CONNECT over
// HTTP/2, which few servers (not Node's by default) accept.
import { Client, type Dispatcher, type buildConnector } from 'undici'
import type { UpstreamProtocol } from '../options/types.js'

/** What a try needs of a connection: a plain request, one with a streamed body, an upgrade. */
export type ConnectionUse = 'request' | 'streamed' | 'upgrade'

export function connectionUse (body: unknown, upgrade: unknown): ConnectionUse {
  if (upgrade !== undefined && upgrade !== null) return 'upgrade'
  return body === undefined || body === null ? 'request' : 'streamed'
}

type Connector = buildConnector.connector

export interface DispatcherOptions {
  /** For undici's buildConnector: ALPN (`allowH2`) or prior knowledge (`useH2c`). */
  connector: { allowH2?: boolean, useH2c?: boolean }
  /** For undici's Pool. */
  pool: { pipelining: number, maxConcurrentStreams?: number, factory?: (origin: URL, options: object) => Dispatcher }
  /** The connections may speak HTTP/2 (see h2-trailers.ts). */
  http2: boolean
}

export function dispatcherOptions (protocol: UpstreamProtocol, use: ConnectionUse, streams: number): DispatcherOptions {
  if (protocol === 'http1' || use === 'upgrade') return { connector: {}, pool: { pipelining: 1 }, http2: false }
  const connector = protocol === 'h2' ? { allowH2: true } : { useH2c: true }
  if (use === 'streamed') return { connector, pool: { pipelining: 1, maxConcurrentStreams: streams }, http2: true }
  // Prior knowledge: every h2c connection speaks HTTP/2 from its first byte.
  return { connector, pool: { pipelining: 1, maxConcurrentStreams: streams, factory: multiplexing(streams, protocol === 'h2c' ? streams : null) }, http2: true }
}

/**
 * Clients that carry `streams` requests at once once a connection speaks HTTP/2, and one at a
 * time while it speaks HTTP/1.1 ('h2' falls back to it where ALPN does not offer h2): undici
 * sets pipelining per client, and pipelined HTTP/1.1 would put a request behind another's
 * answer. A new connection starts at what the target's last one spoke (`known`), so a burst
 * waits for one connection to an HTTP/2 target, not one each; before anything is known over
 * ALPN, one request per connection, as HTTP/1.1.
 */
function multiplexing (streams: number, known: number | null): (origin: URL, options: object) => Dispatcher {
  return (origin, options) => {
    const connect = (options as { connect: Connector }).connect
    const client: Client = new Client(origin, {
      ...options,
      pipelining: known ?? 1,
      connect: (connectOptions, callback) => {
        connect(connectOptions, (error, socket) => {
          if (error === null) client.pipelining = known = (socket as { alpnProtocol?: unknown }).alpnProtocol === 'h2' ? streams : 1
          if (error !== null) callback(error, null)
          else callback(null, socket!)
        })
      }
    })
    return client
  }
}

/**
 * Requests in flight a target may have under connections.perTarget: one per connection over
 * HTTP/1.1, `streams` per connection over HTTP/2.
 */
export function perTargetRoom (protocol: UpstreamProtocol, perTarget: number, streams: number): number {
  return protocol === 'http1' ? perTarget : perTarget * streams
}
