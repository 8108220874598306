// How a target's connections are opened: undici's connector behind a gate. While a target's
// last connection attempt failed outright (refused, unreachable, TLS: anything but a timeout),
// it gets one attempt at a time; requests that need a connection meanwhile share its outcome.
//
// Why: a target that ejection keeps in rotation (`outlier.maxEjectedPercent`) would otherwise
// cost one refused TCP connect per request, most of what a failure storm costs the gateway,
// and a burst of SYNs to the failing host. Waiters fail with a real refusal made while they
// waited, never a remembered one. A timeout is not shared: a late joiner would be told "timed
// out" before its own timeouts.connect had run.
import { EventEmitter } from 'node:events'
import { buildConnector } from 'undici'

type Connector = buildConnector.connector
type Options = buildConnector.Options
type Callback = buildConnector.Callback

/** undici's connect timeout error (`ConnectTimeoutError`). */
const CONNECT_TIMEOUT = 'UND_ERR_CONNECT_TIMEOUT'

function isOutright (error: Error): boolean {
  return (error as NodeJS.ErrnoException).code !== CONNECT_TIMEOUT
}

function settle (callback: Callback, error: Error | null, socket: Parameters<Callback>[1]): void {
  if (error !== null) callback(error, null)
  else callback(null, socket!)
}

interface Waiter { connect: Connector, options: Options, callback: Callback }

/** How long one new connection took to open: TCP, then the TLS handshake (https targets). */
export interface ConnectTiming { tcpMs: number, tlsMs: number | null }

/**
 * `connect` timed: undici's connector returns the socket it creates, whose `connect` event ends
 * the TCP part; the callback (after `secureConnect` for TLS) ends the whole. Only successful
 * connections are timed: a failed one is counted as a failure elsewhere.
 */
export function timed (connect: Connector, observe: (timing: ConnectTiming) => void): Connector {
  return (options, callback) => {
    const started = performance.now()
    let tcpAt = 0
    const socket = connect(options, (error, opened) => {
      if (error === null) {
        const end = performance.now()
        const tcpEnd = tcpAt === 0 ? end : tcpAt
        observe({ tcpMs: tcpEnd - started, tlsMs: options.protocol === 'https:' ? end - tcpEnd : null })
      }
      settle(callback, error, opened)
    }) as unknown
    if (socket instanceof EventEmitter) socket.once('connect', () => { tcpAt = performance.now() })
    return socket as ReturnType<Connector>
  }
}

/**
 * `connect` whose sockets call `ended` when the target closes or resets its side, before undici
 * hears of it. undici 7 asserts that its parser is not paused when a socket whose answer ends
 * with the connection gets its FIN or ECONNRESET (Parser.finish, from the socket's 'end' and
 * 'error' listeners: nodejs/undici#5360); a pause the relay asked for (a slow client) would make
 * that assertion end the process. These listeners come first, so the target's paused tries
 * resume in time: nothing is left to read on a socket that ended, so resuming costs no memory.
 */
export function endsFirst (connect: Connector, ended: () => void): Connector {
  return (options, callback) => {
    connect(options, (error, socket) => {
      if (error === null) socket!.on('end', ended).on('error', ended)
      settle(callback, error, socket)
    })
  }
}

/** A connection time average that forgets: each new connection weighs this much. */
const CONNECT_ALPHA = 0.3

/**
 * New connections to one target and how long they took to open, as averages that follow the
 * recent ones (a target behind a slow TLS terminator shows here before its latency does).
 */
export class ConnectTimes {
  count = 0
  tcpMs: number | null = null
  tlsMs: number | null = null

  record (timing: ConnectTiming): void {
    this.count++
    this.tcpMs = average(this.tcpMs, timing.tcpMs)
    if (timing.tlsMs !== null) this.tlsMs = average(this.tlsMs, timing.tlsMs)
  }

  snapshot (): { count: number, tcpMs: number | null, tlsMs: number | null } {
    const round = (n: number | null): number | null => n === null ? null : Math.round(n * 10) / 10
    return { count: this.count, tcpMs: round(this.tcpMs), tlsMs: round(this.tlsMs) }
  }
}

function average (current: number | null, sample: number): number {
  return current === null ? sample : current + CONNECT_ALPHA * (sample - current)
}

/** One per target, shared by all of the target's connectors (one per connect timeout). */
export class ConnectGate {
  /** The last connection attempt to finish failed outright. */
  #failing = false
  /** Set while the one attempt allowed to a failing target is under way. */
  #waiters: Waiter[] | null = null

  /** `connect` with this gate in front of it. */
  wrap (connect: Connector): Connector {
    const gated: Connector = (options, callback) => {
      if (!this.#failing) {
        connect(options, (error, socket) => {
          this.#failing = error !== null && isOutright(error)
          settle(callback, error, socket)
        })
        return
      }
      if (this.#waiters !== null) {
        this.#waiters.push({ connect: gated, options, callback })
        return
      }
      this.#waiters = []
      connect(options, (error, socket) => {
        const waiters = this.#waiters ?? []
        this.#waiters = null
        this.#failing = error !== null && isOutright(error)
        settle(callback, error, socket)
        for (const waiter of waiters) {
          if (error !== null && this.#failing) waiter.callback(error, null)
          else waiter.connect(waiter.options, waiter.callback)
        }
      })
    }
    return gated
  }
}
