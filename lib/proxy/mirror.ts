// routes[].mirror: a copy of a request to another pool (Envoy's request mirroring, nginx's
// `mirror`), for trying a new service on production traffic. The copy leaves once the client's
// body is in hand, carries `x-mirrored-by: <proxyName>` so its service can skip side effects,
// and its answer is read and thrown away. The client's exchange never waits for it and never
// hears of it: a copy that fails is counted and logged at debug, nothing more.
import { setMaxListeners } from 'node:events'
import type { FastifyRequest } from 'fastify'
import type { MirrorConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import { classify } from '../errors/classify.js'
import { backstop } from './try.js'
import type { PreparedBody } from './body.js'

/** What became of a copy: answered (any status), failed, or skipped (busy, or its body too large to copy). */
export type MirrorOutcome = 'answered' | 'failed' | 'skipped'

export class Mirror {
  #inFlight = 0
  /** Percent owed: each request adds `percent`, each copy takes 100 (an exact share, no dice). */
  #credit = 0
  /** Aborts the copies in flight when the app closes: a slow mirror must not hold it open. */
  readonly #closing = new AbortController()

  constructor (
    readonly config: MirrorConfig,
    readonly pool: UpstreamPool,
    private readonly proxyName: string,
    private readonly counted: (outcome: MirrorOutcome) => void
  ) {
    // Each copy in flight listens on the one signal: at most maxInFlight of them, by design.
    setMaxListeners(config.maxInFlight + 1, this.#closing.signal)
  }

  get inFlight (): number {
    return this.#inFlight
  }

  /**
   * Whether this request gets a copy: its share of `percent`, room under `maxInFlight`, and a
   * declared body within `bodyLimit`. The copy is sent by `send` once the body is ready.
   */
  take (request: FastifyRequest): boolean {
    this.#credit += this.config.percent
    if (this.#credit < 100) return false
    this.#credit -= 100
    const length = request.headers['content-length']
    if (this.#inFlight >= this.config.maxInFlight || (length !== undefined && Number(length) > this.config.bodyLimit)) {
      this.counted('skipped')
      return false
    }
    return true
  }

  /**
   * Sends the copy: `headers` as the request went upstream (forwarding rules, the route's
   * rewriter) with the client's own Host, `body` as the exchange holds it. A body the gateway
   * streams rather than keeps (over the 64 KiB it keeps for retries) cannot be copied: skipped.
   */
  send (request: FastifyRequest, path: string, headers: Record<string, string | string[]>, body: PreparedBody): void {
    try {
      this.#send(request, path, headers, body)
    } catch (err) {
      // Whatever goes wrong with a copy stays with the copy: the client's exchange goes on.
      this.#failed(request, null, err)
    }
  }

  #send (request: FastifyRequest, path: string, headers: Record<string, string | string[]>, body: PreparedBody): void {
    const payload = body.body
    if (payload !== null && typeof payload !== 'string' && !Buffer.isBuffer(payload)) {
      this.counted('skipped')
      return
    }
    if (payload !== null && Buffer.byteLength(payload) > this.config.bodyLimit) {
      this.counted('skipped')
      return
    }
    // Only a target in rotation: a copy never takes the half-open trial of a pool that is down.
    const target = this.pool.targets.some((t) => t.isAvailable()) ? this.pool.candidates(request)[0] : undefined
    if (target === undefined) {
      this.#failed(request, null, new Error(`no target of pool "${this.pool.name}" can take traffic`))
      return
    }
    const copy: Record<string, string | string[]> = Object.assign({}, headers, { 'x-mirrored-by': this.proxyName })
    const host = request.headers.host
    if (host !== undefined) copy.host = host
    else Reflect.deleteProperty(copy, 'host')
    const { connect, headers: headersTimeout, body: bodyTimeout } = this.pool.config.timeouts
    this.#inFlight++
    target.client(backstop(connect)).request({
      path,
      method: request.method as 'GET',
      headers: copy,
      body: payload,
      headersTimeout: headersTimeout === false ? 0 : headersTimeout,
      bodyTimeout: bodyTimeout === false ? 0 : bodyTimeout,
      signal: this.#closing.signal
    }).then(async (answer) => {
      // Read to the end, so the connection goes back to the pool for the next copy.
      await answer.body.dump()
      this.counted('answered')
    }).catch((err: unknown) => {
      this.#failed(request, target.hostPort, err)
    }).finally(() => {
      this.#inFlight--
    })
  }

  /** The app is closing: copies still in flight are dropped. */
  close (): void {
    this.#closing.abort()
  }

  #failed (request: FastifyRequest, target: string | null, err: unknown): void {
    this.counted('failed')
    const { error, cause } = classify(err, { connected: false, requestSent: false, responseStarted: false })
    request.log.debug({ mirror: this.pool.name, target, error, cause }, `mirror copy to pool "${this.pool.name}" failed: ${err instanceof Error ? err.message : String(err)}`)
  }
}
