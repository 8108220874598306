// The status page, a request's story and a probe as plain text: what `curl` gets when it asks
// for nothing in particular, as the gateway's error answers do. Same report, same words as the
// HTML page; only the layout differs, and nothing needs escaping.
import type { Finding } from './diagnosis.js'
import type { RequestStory } from './recorder.js'
import { routeWords, type PoolReport, type StatusReport, type TargetReport, type Windows } from './report.js'
import type { WindowStats } from './stats.js'
import type { ProbeResult } from './probe.js'
import type { RateLimitStoreSnapshot } from '../proxy/rate-limit-store.js'

export function statusText (report: StatusReport, base: string): string {
  const lines = [`Upstream status at ${report.at} (HTML: Accept: text/html; JSON: Accept: application/json)`, '', 'Diagnosis']
  lines.push(...diagnosisLines(report.diagnosis))
  lines.push(...storeLines(report.rateLimitStore))
  for (const c of report.caches ?? []) {
    const n = c.counts
    lines.push('', `Cache of route ${c.route}: ${n.hits} hits, ${n.misses} misses, ${n.staleIfError} stale for a failure, ${n.staleWhileRevalidate} stale while refreshing, ${n.revalidated} revalidated, ${n.collapsed} waited for another request, ${n.stored} stored, ${n.storeErrors} store errors; ${c.bytes === null ? 'held in Redis' : `${c.bytes} of ${c.maxBytes} bytes held`}`)
  }
  if (report.storyStore !== null) lines.push('', `Request story store (status.store): ${report.storyStore.state === 'ok' ? 'reachable' : 'UNREACHABLE: only this instance\'s requests are found'} since ${report.storyStore.since}`)
  for (const route of report.routes) lines.push('', `Route ${route.prefix} (since start)`, ...routeWords(route).map((line) => `  ${line}`))
  for (const pool of report.pools) lines.push('', ...poolLines(pool, base))
  lines.push('')
  return lines.join('\n')
}

function diagnosisLines (findings: readonly Finding[]): string[] {
  if (findings.length === 0) return ['  Nothing stands out in the last 5 minutes.']
  return findings.flatMap((f) => [
    `  [${f.severity}] ${f.title}`,
    `      evidence: ${Object.entries(f.evidence).map(([k, v]) => `${k} ${v}`).join(' · ')}`,
    `      what to do: ${f.action}`
  ])
}

function storeLines (store: RateLimitStoreSnapshot | null): string[] {
  if (store === null) return []
  return ['', `Rate limit store (rateLimit.redis): ${store.state === 'ok' ? 'reachable' : 'UNREACHABLE'} since ${store.since}${store.lastError !== null ? ` · last error: ${store.lastError}` : ''}`]
}

function poolLines (pool: PoolReport, base: string): string[] {
  const lines = [
    `Pool ${pool.name} · balancer ${pool.balancer}${pool.panic ? ' · PANIC: every target is out' : ''} · queue ${pool.pending}${pool.maxPending === null ? '' : ` / ${pool.maxPending}`}`,
    ...statsLines(pool.stats, '  '),
    '  Targets'
  ]
  for (const t of pool.targets) lines.push(...targetLines(t))
  const errors = Object.entries(pool.errors)
  lines.push('  Recent errors')
  if (errors.length === 0) lines.push('    none recorded')
  for (const [type, ex] of errors) {
    lines.push(`    ${type} × ${ex.count}: last ${ex.at} on ${ex.target ?? '—'}${ex.cause !== null ? ` (${ex.cause})` : ''}, story at ${base === '/' ? '' : base}/requests/${encodeURIComponent(ex.requestId)}`)
  }
  return lines
}

function targetLines (t: TargetReport): string[] {
  return [
    `    ${t.state.toUpperCase()} ${t.url} since ${t.since}${t.why !== null ? ` — ${t.why}` : ''}`,
    `      in flight ${t.inFlight} · ejections ${t.ejections}${t.lastError !== null ? ` · last error ${t.lastError.error} at ${t.lastError.at}` : ''}`,
    ...statsLines(t.stats, '      ')
  ]
}

function statsLines (w: Windows, indent: string): string[] {
  const ms = (n: number | undefined): string => n === undefined ? '—' : `${n < 10 ? n.toFixed(1) : Math.round(n)} ms`
  const row = (name: string, s: WindowStats): string =>
    `${indent}${name.padEnd(7)}${s.rate.toFixed(2).padStart(8)} req/s  ${String(s.requests).padStart(6)} req  ${String(s.status5xx).padStart(5)} 5xx  ${String(s.retried).padStart(5)} retried  p50 ${ms(s.latency?.p50)}  p95 ${ms(s.latency?.p95)}  p99 ${ms(s.latency?.p99)}`
  return [row('1 min', w['1m']), row('5 min', w['5m']), row('15 min', w['15m'])]
}

export function storyText (story: RequestStory): string {
  const a = story.answer
  const lines = [
    `Request ${story.id}`,
    `${story.at} · ${story.method} on route ${story.route} · pool ${story.pool} · ${story.ms} ms`,
    '',
    `Answer: ${a.status}${a.error !== null ? ` ${a.error} (blame: ${a.blame ?? '?'})` : ' delivered after a retry'}${a.cause !== null ? ` — cause ${a.cause}` : ''}`,
    ...(a.note !== null ? [`  ${a.note}`] : []),
    ...(story.cache !== undefined ? [`  answered from the cache instead (${story.cache}): the client got the stored answer, not the failure`] : []),
    '',
    'Tries'
  ]
  story.attempts.forEach((t, i) => {
    lines.push(`  ${i + 1}. ${t.target}: ${t.error ?? `status ${t.status ?? '?'}`}${t.cause !== null ? ` (${t.cause})` : ''} in ${t.phase} after ${Math.round(t.ms)} ms`)
  })
  lines.push('', `Pool state when it ended: ${story.poolState.map((p) => `${p.target} ${p.state}`).join(' · ')}`, '')
  return lines.join('\n')
}

export function probeText (result: ProbeResult): string {
  const phase = (name: string, value: number | null): string => `  ${name.padEnd(20)}${value === null ? '—' : `${value} ms`}`
  return [
    `Probe of ${result.target} (pool ${result.pool}) at ${result.at}`,
    `GET ${result.url}`,
    result.ok ? `Outcome: ${result.status ?? '?'}` : `Outcome: ${result.error ?? '?'} in the ${result.phase ?? '?'} phase${result.cause !== null ? ` — cause ${result.cause}` : ''}`,
    'Phases (from the start)',
    phase('DNS lookup', result.ms.dns),
    phase('connected', result.ms.connect),
    phase('TLS handshake done', result.ms.tls),
    phase('first byte', result.ms.firstByte),
    phase('total', result.ms.total),
    ''
  ].join('\n')
}
