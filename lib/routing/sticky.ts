// Session affinity (pools.<name>.sticky), as HAProxy's `cookie … insert`: the gateway's own
// cookie names the target that served a client, and that client's next requests go to it
// while it is in rotation; when it is not, the balancer chooses and the cookie is rewritten.
//
// The cookie never holds an address: a target's id is an HMAC of its origin under a key drawn
// from the pool's configuration, so every gateway instance with the same configuration gives a
// target the same id (a client keeps its target whichever instance it reaches), and the id
// says nothing a client could use.
import { createHash, createHmac } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import type { PoolConfig, StickyConfig } from '../options/config.js'
import type { Target } from '../pool/target.js'
import { cookieOf, gatewayCookie } from './cookies.js'

export class Affinity {
  readonly #key: Buffer
  readonly #ids = new WeakMap<Target, string>()
  readonly #maxAge: number | null

  constructor (pool: PoolConfig, readonly sticky: StickyConfig, proxyName: string) {
    this.#key = createHash('sha256').update(JSON.stringify(['fastify-upstream sticky', proxyName, pool.name, pool.targets.map((t) => t.url)])).digest()
    this.#maxAge = sticky.ttl === null ? null : Math.max(1, Math.round(sticky.ttl / 1000))
  }

  /** The target's id in the cookie: made once per target. */
  idOf (target: Target): string {
    let id = this.#ids.get(target)
    if (id === undefined) {
      id = createHmac('sha256', this.#key).update(target.origin).digest('base64url').slice(0, 16)
      this.#ids.set(target, id)
    }
    return id
  }

  /**
   * The candidates with the client's target first, when it is one of them (in rotation now);
   * otherwise as the balancer ordered them.
   */
  first (candidates: Target[], request: FastifyRequest): Target[] {
    const id = cookieOf(request, this.sticky.cookie)
    if (id === undefined || candidates.length < 2) return candidates
    const i = candidates.findIndex((target) => this.idOf(target) === id)
    if (i <= 0) return candidates
    const ordered = candidates.slice()
    ordered.unshift(...ordered.splice(i, 1))
    return ordered
  }

  /** The Set-Cookie an answer from `target` needs: null when the client's cookie names it already. */
  cookieFor (target: Target, request: FastifyRequest): string | null {
    const id = this.idOf(target)
    return cookieOf(request, this.sticky.cookie) === id ? null : gatewayCookie(request, this.sticky.cookie, id, this.#maxAge)
  }
}
