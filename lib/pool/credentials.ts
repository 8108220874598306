// A pool's upstream credentials (pools.<name>.auth): static headers, and a bearer token from
// an async function, fetched before the first request, refreshed shortly before it expires and
// once after an upstream 401. One call at a time however many requests wait, bounded in time,
// and after a failure not called again for a second, so a failing token service is not
// hammered and no request waits on it for long. Its values never reach a log or a page.
import type { FastifyBaseLogger } from 'fastify'
import type { AuthConfig } from '../options/config.js'
import type { AuthToken } from '../options/types.js'
import { GatewayError, GATEWAY_CODES, classifyCredentialsFailure } from '../errors/classify.js'

/** How long `auth.token` may take before the requests waiting on it get their 502. */
export const TOKEN_TIMEOUT_MS = 5000
/** After a failed call, the next one waits this long (requests meanwhile get the same 502). */
export const FAILURE_BACKOFF_MS = 1000
/** A token is refreshed this long before it expires, at most ... */
export const REFRESH_LEAD_MS = 30_000
/** ... and at most this share of its lifetime (a 60 s token is refreshed 6 s before its end). */
export const REFRESH_LEAD_SHARE = 0.1
/** An upstream 401 refreshes the token at most this often (a storm of 401s makes one call). */
export const UNAUTHORIZED_REFRESH_MS = 5000

/** The longest part of the token function's own error message that is kept. */
const MAX_MESSAGE = 200
const REDACTED = '[redacted]'
/** How many token values redact() knows: the current one and the one before. */
const RECENT_KEPT = 2

/** `auth.token` failed: threw, rejected, timed out or resolved with something unusable. */
export class CredentialsError extends GatewayError {
  constructor (message: string) {
    super(GATEWAY_CODES.credentials, message)
  }
}

interface Token {
  value: string
  bearer: string
  /** Epoch ms; Infinity: valid until an upstream 401. */
  expiresAt: number
  /** From then on, a request starts a refresh in the background and still uses this token. */
  refreshAt: number
}

export class Credentials {
  readonly #pool: string
  readonly #auth: AuthConfig
  readonly #log: FastifyBaseLogger
  readonly #now: () => number
  readonly #names: string[]
  #token: Token | null = null
  #inFlight: Promise<void> | null = null
  /** Ends the call in flight early (close()). */
  #cut: ((err: Error) => void) | null = null
  #failure: { error: CredentialsError, until: number } | null = null
  #lastUnauthorized = -Infinity
  /** The last token values handed out, the current one included: a retired one is still a secret to redact. */
  readonly #recent: string[] = []

  constructor (pool: string, auth: AuthConfig, log: FastifyBaseLogger, now: () => number = Date.now) {
    this.#pool = pool
    this.#auth = auth
    this.#log = log
    this.#now = now
    this.#names = Object.keys(auth.headers)
  }

  /** Whether requests carry a token (and so may have to wait for one). */
  get hasToken (): boolean {
    return this.#auth.token !== null
  }

  /**
   * Whether apply() has everything now. A token in its last stretch (see REFRESH_LEAD_MS) is
   * still used while a refresh starts in the background, so no request waits for it.
   */
  ready (): boolean {
    if (this.#auth.token === null) return true
    const token = this.#token
    const now = this.#now()
    if (token === null || now >= token.expiresAt) return false
    if (now >= token.refreshAt && this.#inFlight === null && !this.#backingOff(now)) this.#refresh().catch(() => {})
    return true
  }

  /** Resolves once ready() is true; rejects with a CredentialsError when no token can be had. */
  async wait (): Promise<void> {
    if (this.ready()) return
    const failure = this.#failure
    if (failure !== null && this.#now() < failure.until) throw failure.error
    await this.#refresh()
  }

  /**
   * Puts the credentials on an upstream request's headers, in place, over any the client sent
   * under the same names. Returns the token value sent, to tell a later 401 which one it was.
   */
  apply (headers: Record<string, unknown>): string | null {
    const names = this.#names
    for (let i = 0; i < names.length; i++) headers[names[i]!] = this.#auth.headers[names[i]!]
    if (this.#auth.token === null) return null
    const token = this.#token
    // Never the client's own Authorization in place of the gateway's (undici skips undefined).
    headers.authorization = token?.bearer
    return token?.value ?? null
  }

  /** The credential headers for the gateway's own requests (health checks, the probe), once ready. */
  async headers (): Promise<Record<string, string>> {
    await this.wait()
    const headers: Record<string, string> = {}
    this.apply(headers)
    return headers
  }

  /**
   * An upstream answered 401 to a request sent with token `sent`. Starts a refresh unless one
   * is under way, the token was already replaced, or a 401 started one less than
   * UNAUTHORIZED_REFRESH_MS ago. Returns whether a token other than `sent` is (or will be)
   * there to send again with.
   */
  unauthorized (sent: string | null): boolean {
    if (this.#auth.token === null) return false
    if (this.#inFlight !== null) return true
    const token = this.#token
    if (token !== null && token.value !== sent) return true
    const now = this.#now()
    if (now - this.#lastUnauthorized < UNAUTHORIZED_REFRESH_MS || this.#backingOff(now)) return false
    this.#lastUnauthorized = now
    // The upstream refuses it: no request is sent with it again.
    this.#token = null
    this.#refresh().catch(() => {})
    return true
  }

  /** Replaces every credential value in `text` (an error message) with "[redacted]". */
  redact (text: string): string {
    const secrets = [...Object.values(this.#auth.headers), ...this.#recent]
    let out = text
    for (const secret of secrets) out = out.split(secret).join(REDACTED)
    return out
  }

  /** The app is closing: a call in flight no longer holds anyone (or a timer). */
  close (): void {
    this.#cut?.(new CredentialsError(`auth.token of pool "${this.#pool}" was still pending when the gateway closed`))
  }

  #backingOff (now: number): boolean {
    return this.#failure !== null && now < this.#failure.until
  }

  /** The one call in flight, made now if none is. */
  async #refresh (): Promise<void> {
    if (this.#inFlight !== null) return await this.#inFlight
    const startedAt = this.#now()
    const flight = this.#callBounded()
      .then((result) => { this.#accept(result, startedAt) })
      .catch((err: unknown) => { throw this.#failed(err) })
    this.#inFlight = flight
    flight.then(() => { this.#inFlight = null }, () => { this.#inFlight = null })
    return await flight
  }

  /** The token function's result, or its failure; TOKEN_TIMEOUT_MS at most. */
  async #callBounded (): Promise<unknown> {
    const fn = this.#auth.token!
    return await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new CredentialsError(`auth.token of pool "${this.#pool}" did not settle within ${TOKEN_TIMEOUT_MS} ms`))
      }, TOKEN_TIMEOUT_MS)
      timer.unref()
      const settle = (): void => {
        clearTimeout(timer)
        this.#cut = null
      }
      this.#cut = (err) => {
        settle()
        reject(err)
      }
      try {
        Promise.resolve(fn()).then((value) => { settle(); resolve(value) }, (err: unknown) => { settle(); reject(err) })
      } catch (err) {
        settle()
        reject(err)
      }
    })
  }

  #accept (result: unknown, startedAt: number): void {
    const { value, expiresAt } = (result ?? {}) as Partial<AuthToken>
    const shape = `resolved with ${describeResult(result)}; it must resolve with { value: a non-empty string, expiresAt?: epoch milliseconds or a Date }`
    if (typeof value !== 'string' || value === '') throw new CredentialsError(`auth.token of pool "${this.#pool}" ${shape}`)
    // Visible ASCII: a bearer token (RFC 6750 b64token) never has spaces or line breaks.
    if (!/^[\x21-\x7e]+$/.test(value)) throw new CredentialsError(`auth.token of pool "${this.#pool}" resolved with a value that is not a bearer token (spaces, line breaks or non-ASCII characters)`)
    let expires = Infinity
    if (expiresAt !== undefined) {
      expires = expiresAt instanceof Date ? expiresAt.getTime() : typeof expiresAt === 'number' ? expiresAt : NaN
      if (Number.isNaN(expires)) throw new CredentialsError(`auth.token of pool "${this.#pool}" ${shape}`)
    }
    const now = this.#now()
    if (expires <= now) {
      throw new CredentialsError(`auth.token of pool "${this.#pool}" resolved with a token whose expiresAt (${new Date(expires).toISOString()}) has passed; expiresAt is in epoch milliseconds (a JWT's exp, in seconds, must be multiplied by 1000)`)
    }
    const lead = Math.min(REFRESH_LEAD_MS, (expires - startedAt) * REFRESH_LEAD_SHARE)
    this.#token = { value, bearer: `Bearer ${value}`, expiresAt: expires, refreshAt: expires - lead }
    this.#recent.unshift(value)
    if (this.#recent.length > RECENT_KEPT) this.#recent.pop()
    this.#failure = null
  }

  /** Records a failed call (and logs it once, for every request it fails). */
  #failed (err: unknown): CredentialsError {
    const error = err instanceof CredentialsError
      ? err
      : new CredentialsError(`auth.token of pool "${this.#pool}" failed: ${clip(this.redact(messageOf(err)))}`)
    this.#failure = { error, until: this.#now() + FAILURE_BACKOFF_MS }
    const usable = this.#token !== null && this.#now() < this.#token.expiresAt
    const record = { pool: this.#pool, auth: 'token', reason: error.message }
    if (usable) this.#log.warn(record, `${error.message}; the current token is used until it expires`)
    else this.#log.error(record, `${error.message}; requests to pool "${this.#pool}" get 502 until it returns a token (called again after ${FAILURE_BACKOFF_MS} ms)`)
    return error
  }
}

function messageOf (err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`
  return typeof err === 'string' ? err : `a thrown ${err === null ? 'null' : typeof err}`
}

function clip (text: string): string {
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text
}

/** What the function resolved with, by kind only: it may hold a credential. */
function describeResult (result: unknown): string {
  if (result === null || result === undefined) return String(result)
  if (typeof result !== 'object') return `a ${typeof result}`
  const keys = Object.keys(result)
  return keys.length === 0 ? 'an empty object' : `an object with ${keys.map((k) => `${k} (${typeof (result as Record<string, unknown>)[k]})`).join(', ')}`
}

/**
 * Waits on behalf of one request (an exchange, a websocket handshake): `ready` once a token is
 * there, `failed` with the failure's details when none can be had. `cancel` drops both (the
 * client left, a timeout ended the request).
 */
export function waitForCredentials (credentials: Credentials, ready: () => void, failed: (details: ReturnType<typeof classifyCredentialsFailure>) => void): { cancel: () => void } {
  let waiting = true
  credentials.wait().then(() => {
    if (waiting) ready()
  }, (err: unknown) => {
    if (waiting) failed(classifyCredentialsFailure(err))
  })
  return { cancel: () => { waiting = false } }
}
