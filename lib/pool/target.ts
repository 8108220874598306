// One upstream target: its address, weight, live counters and its own keep-alive pool.
import { Pool as UndiciPool } from 'undici'
import type { PoolConfig, TargetConfig } from '../options/config.js'

export interface TargetError {
  /** RFC 9209 error type of the last failure, e.g. `connection_refused`. */
  error: string
  cause: string | null
  at: number
}

export interface TargetSnapshot {
  url: string
  weight: number
  backup: boolean
  inFlight: number
  requests: number
  failures: number
  lastError: { error: string, cause: string | null, at: string } | null
  latencyMs: { ewma: number | null }
}

/** Latency average that forgets: each new sample weighs EWMA_ALPHA. */
const EWMA_ALPHA = 0.2

export class Target {
  readonly url: string
  readonly weight: number
  readonly backup: boolean
  /** `host:port`, as an operator reads it in logs and `next-hop`. */
  readonly hostPort: string
  readonly hostHeader: string

  inFlight = 0
  requests = 0
  failures = 0
  lastError: TargetError | null = null
  latencyEwma: number | null = null

  // One undici pool per connect timeout: a route may override `timeouts.connect`, and undici
  // sets the connect timeout per pool, not per request. Almost always there is exactly one.
  readonly #clients = new Map<number, UndiciPool>()
  readonly #pool: PoolConfig

  constructor (config: TargetConfig, pool: PoolConfig) {
    const url = new URL(config.url)
    this.url = config.url
    this.weight = config.weight
    this.backup = config.backup
    this.hostHeader = url.host
    this.hostPort = `${url.hostname}:${url.port !== '' ? url.port : (url.protocol === 'https:' ? '443' : '80')}`
    this.#pool = pool
  }

  client (connectTimeout: number): UndiciPool {
    let client = this.#clients.get(connectTimeout)
    if (client === undefined) {
      const { connections, tls } = this.#pool
      client = new UndiciPool(this.url, {
        connections: connections.perTarget,
        keepAliveTimeout: connections.keepAlive,
        keepAliveMaxTimeout: connections.keepAlive,
        pipelining: 1,
        connect: {
          timeout: connectTimeout,
          rejectUnauthorized: tls.rejectUnauthorized,
          ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
          ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
          ...(tls.key !== undefined ? { key: tls.key } : {}),
          ...(tls.servername !== undefined ? { servername: tls.servername } : {})
        }
      })
      this.#clients.set(connectTimeout, client)
    }
    return client
  }

  recordSuccess (ms: number): void {
    this.latencyEwma = this.latencyEwma === null ? ms : this.latencyEwma + EWMA_ALPHA * (ms - this.latencyEwma)
  }

  recordFailure (error: TargetError): void {
    this.failures++
    this.lastError = error
  }

  snapshot (): TargetSnapshot {
    return {
      url: this.url,
      weight: this.weight,
      backup: this.backup,
      inFlight: this.inFlight,
      requests: this.requests,
      failures: this.failures,
      lastError: this.lastError === null
        ? null
        : { error: this.lastError.error, cause: this.lastError.cause, at: new Date(this.lastError.at).toISOString() },
      latencyMs: { ewma: this.latencyEwma === null ? null : Math.round(this.latencyEwma * 10) / 10 }
    }
  }

  async close (): Promise<void> {
    const clients = [...this.#clients.values()]
    this.#clients.clear()
    // destroy, not close: in-flight upstream exchanges are cut when the gateway shuts down,
    // as their clients' connections are.
    await Promise.all(clients.map(async (client) => await client.destroy()))
  }
}
