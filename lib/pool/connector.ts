// How a target's connections are opened: undici's own connector, behind a gate that stops a
// target which refuses connections from being asked again by every request at once.
//
// Without the gate, a storm against a target that refuses costs one TCP connect per request:
// every request finds no idle connection and opens its own, and each is refused. Those
// connects are most of what a failure storm costs the gateway (kernel and libuv work, a socket
// object, an error with a stack), and they hammer the failing host with SYNs. Ejection would
// stop them, but `outlier.maxEjectedPercent` keeps some failing targets in rotation on purpose.
//
// So while a target's last connection attempt failed outright (refused, unreachable, a TLS
// failure: anything but a timeout), it gets one attempt at a time. Requests that need a new
// connection meanwhile wait for that attempt: if it fails too, they fail with its error (a
// real refusal, made while they waited, not a remembered one); if it succeeds, each opens its
// own connection as usual. A timeout is not shared: a request that joined late would be told
// "timed out" before its own connect timeout had run, so after one each waiter connects itself.
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
