// DNS discovery: a target given by name (or by SRV record) becomes the set of addresses the
// name resolves to, re-resolved as the records' TTL runs out. This module only turns a name into
// an address set and keeps one name's schedule and status; the pool applies the differences
// (adds, drains, keeps targets). Nothing here runs per request.
import { lookup } from 'node:dns'
import { Resolver } from 'node:dns/promises'
import { isIP } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { DiscoveryConfig, TargetConfig } from '../options/config.js'
import type { AddressFamily } from '../options/types.js'
import { LookupError } from '../errors/codes.js'

/** One address a name resolved to: where to connect, and what to call it (Host, TLS name). */
export interface Endpoint {
  /** Identity across refreshes: the same endpoint in two answers keeps its target. */
  key: string
  ip: string
  port: number
  /** The name requests carry in Host and TLS SNI. */
  hostname: string
  /** SRV only: the record's weight and whether its priority is not the lowest of the answer. */
  weight: number | null
  backup: boolean
}

export interface Answer {
  endpoints: Endpoint[]
  /** Seconds the answer may be kept (the smallest TTL of its records); null when unknown. */
  ttl: number | null
  /** `dns`: the resolver; `system`: the system's lookup (for names in /etc/hosts). */
  via: 'dns' | 'system'
}

/** What a target asks discovery to resolve: a host name with a port, or an SRV name. */
export type Source =
  | { kind: 'name', hostname: string, port: number }
  | { kind: 'srv', name: string }

/** A lookup's records are at most this many, so a runaway answer cannot explode a pool. */
const MAX_ENDPOINTS = 256

/** The name a target needs resolved, or null for an IP literal (no DNS at all). */
export function sourceOf (target: TargetConfig): Source | null {
  if (target.srv !== null) return { kind: 'srv', name: target.srv.name }
  const url = new URL(target.url)
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
  if (isIP(hostname) !== 0) return null
  return { kind: 'name', hostname, port: url.port !== '' ? Number(url.port) : (url.protocol === 'https:' ? 443 : 80) }
}

/** `http://10.0.0.5:8080`, `http://[fd00::5]:8080`: where a target's connections go. */
export function originOf (protocol: string, ip: string, port: number): string {
  return `${protocol}//${isIP(ip) === 6 ? `[${ip}]` : ip}:${port}`
}

/**
 * Resolves names with node:dns's Resolver (the given servers, or the system's). Every lookup is
 * bounded by `timeout`: one still unanswered then is cancelled and fails with ETIMEOUT.
 */
export class NameResolver {
  readonly #resolver: Resolver
  readonly #servers: boolean

  constructor (readonly config: DiscoveryConfig) {
    // c-ares retries on its own within our timeout; our timer below is the hard bound.
    this.#resolver = new Resolver({ timeout: Math.max(1, Math.ceil(config.timeout / 2)), tries: 2 })
    this.#servers = config.servers !== null
    if (config.servers !== null) this.#resolver.setServers(config.servers)
  }

  async resolve (source: Source): Promise<Answer> {
    let timer: NodeJS.Timeout | undefined
    const bounded = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        this.#resolver.cancel()
        reject(new LookupError('ETIMEOUT', `no answer within discovery.timeout (${this.config.timeout} ms)`))
      }, this.config.timeout)
      timer.unref()
    })
    try {
      return await Promise.race([source.kind === 'srv' ? this.#srv(source.name) : this.#name(source.hostname, source.port), bounded])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Stops lookups under way (on close). */
  cancel (): void {
    this.#resolver.cancel()
  }

  /**
   * A and AAAA, asked together, kept as discovery.family says: by default IPv4 addresses when
   * there are any, else IPv6 (as Envoy's V4_PREFERRED), since a dual-stack name would otherwise
   * put a target on a family the service may not listen on. Without discovery.servers, a name
   * the resolver cannot answer for falls back to the system lookup (which reads /etc/hosts);
   * `localhost` goes there directly.
   */
  async #name (hostname: string, port: number): Promise<Answer> {
    const addresses = await this.#addresses(hostname)
    return {
      endpoints: addresses.records.slice(0, MAX_ENDPOINTS).map((r) => ({ key: `${r.address}:${port}`, ip: r.address, port, hostname, weight: null, backup: false })),
      ttl: addresses.ttl,
      via: addresses.via
    }
  }

  async #addresses (hostname: string): Promise<{ records: Array<{ address: string }>, ttl: number | null, via: Answer['via'] }> {
    // RFC 6761: localhost is the system's to answer, not DNS's.
    const family = this.config.family
    if (!this.#servers && isLocalhost(hostname)) {
      const system = await systemLookup(hostname, family)
      if (system.length > 0) return { records: system, ttl: null, via: 'system' }
    }
    const none = Promise.resolve([])
    const [v4, v6] = await Promise.allSettled([
      family === 'ipv6' ? none : this.#resolver.resolve4(hostname, { ttl: true }),
      family === 'ipv4' ? none : this.#resolver.resolve6(hostname, { ttl: true })
    ])
    const records = keepFamily(family, v4.status === 'fulfilled' ? v4.value : [], v6.status === 'fulfilled' ? v6.value : [])
    if (records.length > 0) return { records, ttl: Math.min(...records.map((r) => r.ttl)), via: 'dns' }
    const failed = v4.status === 'rejected' ? v4.reason as NodeJS.ErrnoException : v6.status === 'rejected' ? v6.reason as NodeJS.ErrnoException : null
    const code = failed?.code ?? 'ENODATA'
    // Without discovery.servers, what the system resolves counts too (/etc/hosts, nsswitch).
    if (!this.#servers) {
      const system = await systemLookup(hostname, family)
      if (system.length > 0) return { records: system, ttl: null, via: 'system' }
    }
    throw new LookupError(code, failed?.message ?? `${hostname} has no ${WANTED[family]} records`)
  }

  /**
   * SRV: one endpoint per record, each record's target name resolved to its addresses. Records
   * whose priority is not the lowest become backups. A record's name that does not resolve is
   * left out; if none resolves, the lookup fails with that name's error.
   */
  async #srv (name: string): Promise<Answer> {
    const started = performance.now()
    let records: Awaited<ReturnType<Resolver['resolveSrv']>>
    try {
      records = await this.#resolver.resolveSrv(name)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      throw new LookupError(e.code ?? 'ESERVFAIL', e.message)
    }
    if (records.length === 0) throw new LookupError('ENODATA', `${name} has no SRV records`)
    const top = Math.min(...records.map((r) => r.priority))
    const endpoints: Endpoint[] = []
    let ttl: number | null = null
    let lastError: unknown = null
    const resolved = await Promise.allSettled(records.map(async (r) => ({ record: r, answer: await this.#addresses(r.name) })))
    for (const result of resolved) {
      if (result.status === 'rejected') {
        lastError = result.reason
        continue
      }
      const { record, answer } = result.value
      if (answer.ttl !== null) ttl = ttl === null ? answer.ttl : Math.min(ttl, answer.ttl)
      for (const a of answer.records) {
        endpoints.push({ key: `${record.name}/${a.address}:${record.port}`, ip: a.address, port: record.port, hostname: record.name, weight: record.weight, backup: record.priority !== top })
      }
    }
    if (endpoints.length === 0) {
      const e = lastError as { code?: string, message?: string } | null
      throw new LookupError(e?.code ?? 'ENODATA', e?.message ?? `the SRV records of ${name} name no address (after ${Math.round(performance.now() - started)} ms)`)
    }
    // The SRV records' own TTL is not given by node:dns; their targets' A records bound it.
    return { endpoints: endpoints.slice(0, MAX_ENDPOINTS), ttl, via: 'dns' }
  }
}

function isLocalhost (hostname: string): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, '')
  return name === 'localhost' || name.endsWith('.localhost')
}

async function systemLookup (hostname: string, family: AddressFamily): Promise<Array<{ address: string }>> {
  return await new Promise((resolve) => {
    lookup(hostname, { all: true }, (err, addresses) => {
      if (err !== null) {
        resolve([])
        return
      }
      // The same choice as for DNS answers.
      resolve(keepFamily(family, addresses.filter((a) => a.family === 4), addresses.filter((a) => a.family === 6)))
    })
  })
}

/** The records a name yields, by discovery.family, from its IPv4 and IPv6 ones. */
function keepFamily<T> (family: AddressFamily, v4: T[], v6: T[]): T[] {
  switch (family) {
    case 'ipv4': return v4
    case 'ipv6': return v6
    case 'prefer-ipv6': return v6.length > 0 ? v6 : v4
    case 'all': return [...v4, ...v6]
    default: return v4.length > 0 ? v4 : v6
  }
}

/** What a name without addresses lacked, for the lookup's error. */
const WANTED: Record<AddressFamily, string> = { 'prefer-ipv4': 'A or AAAA', 'prefer-ipv6': 'A or AAAA', all: 'A or AAAA', ipv4: 'A', ipv6: 'AAAA' }

/** How one name stands, for the status report and `app.upstream.pools()`. */
export interface NameStatus {
  /** The target as configured: `http://api.internal:8080`, `srv+http://_http._tcp.api.service.consul`. */
  name: string
  /** The addresses in use (`ip:port`), the last good set while lookups fail. */
  addresses: string[]
  via: Answer['via'] | null
  lastResolved: string | null
  nextRefresh: string | null
  /** How long the last lookup took. */
  lookupMs: number | null
  lastError: { code: string, message: string, at: string, ms: number } | null
  /** When the current streak of failed lookups began; null while lookups succeed. */
  failingSince: string | null
  /** Failed lookups in the current streak. */
  failures: number
}

export interface NameEvents {
  /** A lookup succeeded: the endpoints now (the pool applies the difference). */
  resolved: (endpoints: Endpoint[]) => void
  /** A lookup took this long (ok or not), for the metrics. */
  looked: (ms: number) => void
  warn: (record: Record<string, unknown>, msg: string) => void
  info: (record: Record<string, unknown>, msg: string) => void
}

/**
 * One discovered name: its lookups, on a schedule (the TTL clamped to [minTtl, maxTtl], or a
 * fixed refresh), backing off from minTtl to maxTtl while they fail. A failure streak is logged
 * once when it begins and once when it ends; the last good set stays in use meanwhile.
 */
export class DiscoveredName {
  readonly label: string
  #timer: NodeJS.Timeout | null = null
  #stopped = false
  #endpoints: Endpoint[] = []
  #via: Answer['via'] | null = null
  #lastResolved: number | null = null
  #nextRefresh: number | null = null
  lookupMs: number | null = null
  lastError: { code: string, message: string, at: number, ms: number } | null = null
  #failingSince: number | null = null
  #failures = 0

  constructor (
    readonly target: TargetConfig,
    readonly source: Source,
    private readonly resolver: NameResolver,
    private readonly pool: string,
    private readonly events: NameEvents
  ) {
    this.label = source.kind === 'srv' ? source.name : source.hostname
  }

  /** Whether some lookup has succeeded: there is a set to serve. */
  get resolved (): boolean {
    return this.#lastResolved !== null
  }

  get endpoints (): readonly Endpoint[] {
    return this.#endpoints
  }

  /** The first lookup; resolves when it is over, whatever its outcome. Later ones are timed. */
  async start (): Promise<void> {
    await this.refresh()
  }

  stop (): void {
    this.#stopped = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    // A lookup under way would hold the resolver's socket open past close.
    this.resolver.cancel()
  }

  async refresh (): Promise<void> {
    const started = performance.now()
    const at = Date.now()
    let answer: Answer
    try {
      answer = await this.resolver.resolve(this.source)
    } catch (err) {
      if (this.#stopped) return
      const ms = Math.round(performance.now() - started)
      this.lookupMs = ms
      this.events.looked(ms)
      const e = err as { code?: string, message?: string }
      this.#failed(e.code ?? 'ESERVFAIL', e.message ?? String(err), at, ms)
      return
    }
    if (this.#stopped) return
    const ms = Math.round(performance.now() - started)
    this.lookupMs = ms
    this.events.looked(ms)
    this.#succeeded(answer, at, ms)
  }

  #succeeded (answer: Answer, at: number, ms: number): void {
    if (this.#failingSince !== null) {
      const count = this.#endpoints.length
      this.events.info({ pool: this.pool, name: this.label, addresses: answer.endpoints.map(show), failures: this.#failures, ms },
        `${this.pool}: ${this.label} resolves again (after ${this.#failures} failed lookups since ${new Date(this.#failingSince).toISOString()}${count > 0 ? `, which served the last good set of ${count} addresses` : ''}): ${answer.endpoints.map(show).join(', ')}`)
    }
    this.#failingSince = null
    this.#failures = 0
    this.#endpoints = answer.endpoints
    this.#via = answer.via
    this.#lastResolved = at
    const { refresh, minTtl, maxTtl } = this.resolver.config
    // No TTL (the system's lookup): kept for minTtl, so edits to /etc/hosts show soon.
    const delay = refresh !== 'ttl' ? refresh : Math.min(maxTtl, Math.max(minTtl, (answer.ttl ?? 0) * 1000))
    this.events.resolved(answer.endpoints)
    this.#schedule(delay)
  }

  #failed (code: string, message: string, at: number, ms: number): void {
    this.lastError = { code, message, at, ms }
    this.#failures++
    if (this.#failingSince === null) {
      this.#failingSince = at
      const count = this.#endpoints.length
      const serving = count > 0
        ? `serving the last good set of ${count} addresses (${this.#endpoints.map(show).join(', ')})`
        : 'no address is known yet: requests to this pool that need it get dns_error'
      this.events.warn({ pool: this.pool, name: this.label, code, ms, addresses: count },
        `${this.pool}: looking up ${this.label} failed with ${code} after ${ms} ms (${message}); ${serving}; retrying until it resolves`)
    }
    const { minTtl, maxTtl } = this.resolver.config
    this.#schedule(Math.min(maxTtl, minTtl * 2 ** Math.min(30, this.#failures - 1)))
  }

  #schedule (delay: number): void {
    if (this.#stopped) return
    this.#nextRefresh = Date.now() + delay
    this.#timer = setTimeout(() => {
      this.#timer = null
      void this.refresh()
    }, delay)
    this.#timer.unref()
  }

  status (): NameStatus {
    const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()
    return {
      name: this.target.url,
      addresses: this.#endpoints.map(show),
      via: this.#via,
      lastResolved: iso(this.#lastResolved),
      nextRefresh: iso(this.#nextRefresh),
      lookupMs: this.lookupMs,
      lastError: this.lastError === null ? null : { ...this.lastError, at: iso(this.lastError.at)! },
      failingSince: iso(this.#failingSince),
      failures: this.#failures
    }
  }

  /** When the next lookup is due (epoch ms), once one is scheduled. */
  get nextRefresh (): number | null {
    return this.#nextRefresh
  }

  /** Failing now: since when (epoch ms), else null. */
  get failingSince (): number | null {
    return this.#failingSince
  }
}

function show (e: Endpoint): string {
  return isIP(e.ip) === 6 ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`
}
