// Which targets a pool has: its fixed addresses, and the addresses its names resolve to as DNS
// answers change (discovery). Addresses that leave an answer drain, then leave for good.
import type { FastifyBaseLogger } from 'fastify'
import type { PoolConfig } from '../options/config.js'
import { Target } from './target.js'
import { DiscoveredName, NameResolver, sourceOf, type Endpoint } from './discovery.js'
import type { Transitions } from './transitions.js'

/** One target of the configuration: a fixed address, or a name and the targets it resolves to. */
interface Named {
  name: DiscoveredName
  /** By endpoint key; targets that left the answer stay here while they drain. */
  targets: Map<string, Target>
}

export interface MembershipEvents {
  /** A target joined: checks start on it. */
  joined: (target: Target) => void
  /** A target left for good (drained after it left its name's answer). */
  left: (target: Target) => void
  /** How long a DNS lookup took (the metrics). */
  looked: (ms: number) => void
}

export class Membership {
  /** The targets now; a new array whenever the set changes (never changed in place). */
  #targets: Target[] = []
  /** Per configured target: a fixed Target, or a discovered name. */
  readonly #sources: Array<Target | Named>
  /** Targets that left their name's answer and still have requests in flight. */
  readonly #leaving = new Set<Target>()
  /** Connection pools of removed targets still closing (awaited on close). */
  readonly #closing = new Set<Promise<void>>()
  #started = false

  constructor (
    private readonly config: PoolConfig,
    private readonly transitions: Transitions,
    private readonly log: FastifyBaseLogger,
    private readonly events: MembershipEvents
  ) {
    this.#sources = config.targets.map((t) => {
      const source = sourceOf(t)
      if (source === null) return new Target(t, config)
      // One resolver per name: a lookup cancelled at its timeout cancels no other name's.
      const named: Named = {
        targets: new Map(),
        name: new DiscoveredName(t, source, new NameResolver(config.discovery), config.name, {
          resolved: (endpoints) => { this.#apply(named, endpoints) },
          looked: (ms) => { this.events.looked(ms) },
          warn: (record, msg) => { this.log.warn(record, msg) },
          info: (record, msg) => { this.log.info(record, msg) }
        })
      }
      return named
    })
    this.#rebuild()
  }

  get targets (): readonly Target[] {
    return this.#targets
  }

  /** The fixed targets, known before any lookup. */
  fixed (): Target[] {
    return this.#sources.filter((s): s is Target => s instanceof Target)
  }

  /** The names, and how each resolves. */
  names (): DiscoveredName[] {
    return this.#named().map((n) => n.name)
  }

  /**
   * Starts discovery. Resolves when each name's first lookup is over, whatever its outcome: a
   * name that does not resolve does not keep the app from starting; it is retried.
   */
  async start (): Promise<void> {
    await Promise.all(this.#named().map(async (n) => await n.name.start()))
    this.#started = true
  }

  /** Removed targets whose last request ended leave the pool; their connections close. */
  sweep (): void {
    if (this.#leaving.size === 0) return
    let gone = false
    for (const target of this.#leaving) {
      if (target.inFlight > 0) continue
      this.#leaving.delete(target)
      for (const named of this.#named()) {
        for (const [key, t] of named.targets) if (t === target) named.targets.delete(key)
      }
      const closing = target.close()
      this.#closing.add(closing)
      void closing.finally(() => this.#closing.delete(closing))
      this.events.left(target)
      gone = true
    }
    if (gone) this.#rebuild()
  }

  async close (): Promise<void> {
    for (const named of this.#named()) named.name.stop()
    await Promise.all([...this.#targets.map(async (t) => await t.close()), ...this.#closing])
  }

  #named (): Named[] {
    return this.#sources.filter((s): s is Named => !(s instanceof Target))
  }

  /**
   * A name's new answer: addresses that stay keep their Target (health, ejection, counters),
   * new ones join (unknown while health checks have not judged them, warming up under slow
   * start), gone ones drain and leave once their requests in flight end.
   */
  #apply (named: Named, endpoints: readonly Endpoint[]): void {
    const now = Date.now()
    const seen = new Set<string>()
    const added: string[] = []
    const removed: string[] = []
    for (const endpoint of endpoints) {
      seen.add(endpoint.key)
      const known = named.targets.get(endpoint.key)
      if (known !== undefined) {
        known.update(endpoint)
        if (known.removed) {
          this.#leaving.delete(known)
          this.transitions.change(known, `is in the DNS answer for ${named.name.label} again`, () => { known.rejoinAnswer() })
        }
        continue
      }
      const target = new Target(named.name.target, this.config, endpoint)
      // Not the first answer: a new address ramps up under slow start, as a recovered one does.
      if (this.#started) target.startWarming(now)
      named.targets.set(endpoint.key, target)
      this.events.joined(target)
      added.push(endpoint.ip)
    }
    for (const [key, target] of named.targets) {
      if (seen.has(key) || target.removed) continue
      removed.push(target.address!)
      this.transitions.change(target, `left the DNS answer for ${named.name.label}: no new requests, those in flight finish`, () => { target.leaveAnswer() })
      this.#leaving.add(target)
    }
    if (added.length > 0 || removed.length > 0) {
      const ips = endpoints.map((e) => e.ip).join(', ')
      this.log.info({ pool: this.config.name, name: named.name.label, added, removed, addresses: endpoints.map((e) => e.ip) },
        `${this.config.name}: ${named.name.label} now resolves to ${ips}${added.length > 0 ? `; added ${added.join(', ')}` : ''}${removed.length > 0 ? `; removed ${removed.join(', ')}` : ''}`)
    }
    this.#rebuild()
    this.sweep()
  }

  #rebuild (): void {
    this.#targets = this.#sources.flatMap((s) => s instanceof Target ? [s] : [...s.targets.values()])
  }
}
