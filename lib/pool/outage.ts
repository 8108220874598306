// Why a pool has no target for a request, in the words of its failure record.
import type { PoolConfig } from '../options/config.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { classifyLookupFailure } from '../errors/classify.js'
import type { Target } from './target.js'
import type { DiscoveredName } from './discovery.js'
import { TRIAL_INTERVAL_MS } from './outlier.js'

/** Why a pool has no target for a request: the details of its failure record. */
export interface Outage {
  /** destination_unavailable; dns_error or dns_timeout when no name of the pool resolved yet. */
  error: Extract<ProxyErrorType, 'destination_unavailable' | 'dns_error' | 'dns_timeout'>
  context: {
    phase: 'route' | 'dns'
    /** Per target, why it is out, one line each. */
    why: string
    /** Seconds until a target may be back, when known. */
    retryAfter: number | null
    cause?: string | null
    /** The name that does not resolve (`host:port`), for dns_error and dns_timeout. */
    target?: string
    /** The last lookup: its code and how long it took. */
    note?: string
  }
}

/**
 * One line per target and when one may be back. With no target at all because no name has
 * resolved yet: the lookup's failure (dns_error, or dns_timeout when the resolver did not
 * answer), with its code and how long it took.
 */
export function explainOutage (config: PoolConfig, targets: readonly Target[], names: readonly DiscoveredName[], now = Date.now()): Outage {
  const failing = targets.length === 0 ? names.find((name) => name.lastError !== null) : undefined
  if (failing !== undefined) {
    const last = failing.lastError!
    const source = failing.source
    return {
      error: classifyLookupFailure(last.code),
      context: {
        phase: 'dns',
        cause: last.code,
        target: source.kind === 'srv' ? source.name : `${source.hostname}:${source.port}`,
        why: '',
        retryAfter: Math.max(1, Math.ceil(((failing.nextRefresh ?? now) - now) / 1000)),
        note: `no address is known for ${failing.label}: its last lookup failed with ${last.code} after ${last.ms} ms at ${new Date(last.at).toISOString()}, failing since ${new Date(failing.failingSince ?? last.at).toISOString()}`
      }
    }
  }
  const lines = targets.map((t) => `${t.hostPort}${t.backup ? ' (backup)' : ''}: ${t.why(t.state(now)) ?? 'available'}`)
  const waits = targets.flatMap((t) => {
    // An ejected primary gets a half-open trial within a second (see OutlierDetector.trial).
    if (t.isEjected(now)) return [Math.min(t.ejectedUntil! - now, t.backup ? Infinity : TRIAL_INTERVAL_MS) / 1000]
    if (t.health === 'unhealthy' && config.health !== null) return [(config.health.interval * config.health.healthyAfter) / 1000]
    return []
  })
  return {
    error: 'destination_unavailable',
    context: {
      phase: 'route',
      why: lines.map((line) => `\n- ${line}`).join(''),
      retryAfter: waits.length > 0 ? Math.max(1, Math.ceil(Math.min(...waits))) : null
    }
  }
}
