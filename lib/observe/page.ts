// The status page and a request's story page, as HTML: self-contained (inline style, no
// script, no fetched asset), refreshed by a meta tag, one column on a phone. Every value from
// outside (target URLs, reasons, causes, request ids) goes through the error page's escapeHtml.
import type { CacheSnapshot } from '../cache/caches.js'
import { escapeHtml as e, htmlDocument } from '../errors/html.js'
import type { Finding } from './diagnosis.js'
import type { RequestStory, TunnelCounts } from './recorder.js'
import { routeWords, type PoolReport, type RouteReport, type StatusReport, type TargetReport } from './report.js'
import type { WindowStats } from './stats.js'
import type { ProbeResult } from './probe.js'
import type { RateLimitStoreSnapshot } from '../proxy/rate-limit-store.js'
import type { StoryStoreSnapshot } from './story-store.js'

export interface PageOptions {
  /** Where the status page is served (links to request stories hang below it). */
  base: string
  /** Seconds between refreshes. */
  refresh: number
}

export function renderStatus (report: StatusReport, options: PageOptions): string {
  const body = [
    `<header><h1>Upstream status</h1><p class="muted">As of <time>${e(report.at)}</time>; refreshes every ${options.refresh} s. <a href="${e(options.base)}?format=json">JSON</a></p></header>`,
    renderDiagnosis(report.diagnosis),
    renderRateLimitStore(report.rateLimitStore),
    renderStoryStore(report.storyStore),
    ...report.routes.map(renderRoute),
    renderCaches(report.caches),
    ...report.pools.map((pool) => renderPool(pool, options.base))
  ].join('\n')
  return page('Upstream status', body, options.refresh)
}

function renderDiagnosis (findings: Finding[]): string {
  if (findings.length === 0) return '<section class="diagnosis ok"><h2>Diagnosis</h2><p>Nothing stands out in the last 5 minutes.</p></section>'
  const items = findings.map((f) => `<li class="finding ${f.severity}"><p class="title"><span class="sev">${e(f.severity)}</span> ${e(f.title)}</p>
<p class="evidence">${Object.entries(f.evidence).map(([k, v]) => `<code>${e(k)}</code> ${e(v)}`).join(' · ')}</p>
<p class="action">${e(f.action)}</p></li>`).join('\n')
  return `<section class="diagnosis"><h2>Diagnosis</h2><ul>${items}</ul></section>`
}

function renderRateLimitStore (store: RateLimitStoreSnapshot | null): string {
  if (store === null) return ''
  const then = store.onStoreError === 'allow' ? 'failing open: requests pass without a limit' : 'failing closed: rate-limited requests get 503'
  const state = store.state === 'ok'
    ? `<strong>reachable</strong> since <time>${e(store.since)}</time>${store.outages > 0 ? ` · ${e(store.outages)} outage(s) since start, the last began with: ${e(store.lastError ?? '?')}` : ''}`
    : `<strong class="bad">unreachable</strong> since <time>${e(store.since)}</time>, ${e(then)} · ${e(store.errors)} error(s), the first: ${e(store.lastError ?? '?')}`
  return `<section class="rate-limit-store"><h2>Rate limit store</h2><p>Redis (rateLimit.redis): ${state}</p></section>`
}

function renderStoryStore (store: StoryStoreSnapshot | null): string {
  if (store === null) return ''
  const state = store.state === 'ok'
    ? `<strong>reachable</strong> since <time>${e(store.since)}</time>: request ids from every instance are found here`
    : `<strong class="bad">unreachable</strong> since <time>${e(store.since)}</time>: only this instance's requests are found · ${e(store.errors)} error(s), the first: ${e(store.lastError ?? '?')}`
  return `<section class="story-store"><h2>Request story store</h2><p>Redis (status.store): ${state}</p></section>`
}

/** A route that chooses its pool or mirrors: where its requests went (since start). */
function renderRoute (route: RouteReport): string {
  return `<section class="route"><h2>Route <code>${e(route.prefix)}</code></h2>${routeWords(route).map((line) => `<p>${e(line)}</p>`).join('')}<p class="muted">Since start.</p></section>`
}

/** Each caching route: what its cache answered, and what it holds. */
function renderCaches (caches: CacheSnapshot[] | undefined): string {
  if (caches === undefined || caches.length === 0) return ''
  const rows = caches.map((c) => {
    const held = c.bytes === null ? `Redis${c.storeHealth?.state === 'unreachable' ? ' <strong class="bad">unreachable</strong>' : ''}` : `${e((c.bytes / 1048576).toFixed(1))} / ${e((c.maxBytes / 1048576).toFixed(1))} MiB`
    const n = c.counts
    return `<tr><td><code>${e(c.route)}</code></td><td>${e(n.hits)}</td><td>${e(n.misses)}</td><td>${e(n.staleIfError)}</td><td>${e(n.staleWhileRevalidate)}</td><td>${e(n.revalidated)}</td><td>${e(n.collapsed)}</td><td>${e(n.stored)}</td><td>${e(n.storeErrors)}</td><td>${held}</td></tr>`
  }).join('')
  return `<section class="caches"><h2>Caches</h2><div class="scroll"><table><thead><tr><th>Route</th><th>Hits</th><th>Misses</th><th>Stale for a failure</th><th>Stale while refreshing</th><th>Revalidated</th><th>Waited for another</th><th>Stored</th><th>Store errors</th><th>Held</th></tr></thead><tbody>${rows}</tbody></table></div></section>`
}

function renderPool (pool: PoolReport, base: string): string {
  const errors = Object.entries(pool.errors)
  const errorRows = errors.length === 0
    ? '<p class="muted">No failures recorded.</p>'
    : `<div class="scroll"><table><thead><tr><th>Error</th><th>Count</th><th>Last</th><th>Target</th><th>Cause</th></tr></thead><tbody>${errors.map(([type, ex]) =>
      `<tr><td><code>${e(type)}</code></td><td>${e(ex.count)}</td><td><a href="${e(`${base}/requests/${encodeURIComponent(ex.requestId)}`)}">${e(ex.requestId)}</a><br><time>${e(ex.at)}</time></td><td>${e(ex.target ?? '—')}</td><td>${e(ex.cause ?? '—')}</td></tr>`).join('')}</tbody></table></div>`
  return `<section class="pool"><h2>Pool <code>${e(pool.name)}</code></h2>
<p class="muted">Balancer ${e(pool.balancer)}${pool.panic ? ' · <strong class="bad">panic: every target is out</strong>' : ''} · queue ${e(pool.pending)} ${pool.maxPending === null ? '(limits.maxPending: no limit)' : `/ ${e(pool.maxPending)} (limits.maxPending)`}</p>
${statsTable([['1 min', pool.stats['1m']], ['5 min', pool.stats['5m']], ['15 min', pool.stats['15m']]])}
${tunnelLine(pool.websockets)}
${renderDns(pool)}<h3>Targets</h3>
<div class="targets">${pool.targets.map((t) => renderTarget(t, pool.name, base)).join('\n')}</div>
<h3>Recent errors</h3>
${errorRows}
</section>`
}

/** Targets given by name: what each resolves to, when it is looked up next, its last failure. */
function renderDns (pool: PoolReport): string {
  if (pool.dns.length === 0) return ''
  const rows = pool.dns.map((d) => `<tr><td><code>${e(d.name)}</code></td><td>${d.addresses.length > 0 ? d.addresses.map((a) => `<code>${e(a)}</code>`).join(' ') : '<strong class="bad">none</strong>'}${d.via === 'system' ? ' (system lookup)' : ''}</td><td>${d.lastResolved !== null ? `<time>${e(d.lastResolved)}</time>` : '—'}</td><td>${d.nextRefresh !== null ? `<time>${e(d.nextRefresh)}</time>` : '—'}</td><td>${d.lookupMs !== null ? `${e(d.lookupMs)} ms` : '—'}</td><td>${d.lastError !== null ? `<code>${e(d.lastError.code)}</code> at <time>${e(d.lastError.at)}</time>${d.failingSince !== null ? ` <strong class="bad">failing since <time>${e(d.failingSince)}</time></strong>` : ''}` : '—'}</td></tr>`).join('')
  return `<h3>Names</h3><div class="scroll"><table><thead><tr><th>Name</th><th>Addresses</th><th>Resolved</th><th>Next lookup</th><th>Lookup</th><th>Last error</th></tr></thead><tbody>${rows}</tbody></table></div>
`
}

function renderTarget (t: TargetReport, pool: string, base: string): string {
  const probe = `${base}/probe?pool=${encodeURIComponent(pool)}&target=${encodeURIComponent(t.url)}`
  return `<article class="target ${e(t.state)}"><p class="name"><span class="state">${e(t.state)}</span> <code>${e(t.url)}</code></p>
<p class="muted">since <time>${e(t.since)}</time>${t.why !== null ? ` — ${e(t.why)}` : ''}</p>
<p class="muted">in flight ${e(t.inFlight)} · ejections ${e(t.ejections)}${connectLine(t.connections)}${t.lastError !== null ? ` · last error <code>${e(t.lastError.error)}</code> at <time>${e(t.lastError.at)}</time>` : ''} · <a href="${e(probe)}">probe</a></p>
${statsTable([['1 min', t.stats['1m']], ['5 min', t.stats['5m']], ['15 min', t.stats['15m']]])}${tunnelLine(t.websockets)}</article>`
}

/** New connections since start and what opening them takes lately (TCP, and TLS for https). */
function connectLine (c: TargetReport['connections']): string {
  if (c.count === 0) return ''
  return ` · connections ${e(c.count)}, connect ${e(c.tcpMs ?? '—')} ms${c.tlsMs !== null ? `, TLS ${e(c.tlsMs)} ms` : ''}`
}

/** WebSocket tunnels since start; nothing for a pool or target that never had a handshake. */
function tunnelLine (c: TunnelCounts): string {
  if (c.opened + c.failed + c.refused === 0) return ''
  return `<p class="muted tunnels">WebSocket tunnels: <strong>${e(c.open)}</strong> open now · ${e(c.opened)} opened · ${e(c.failed)} failed handshakes · ${e(c.refused)} refused by the upstream (since start)</p>`
}

function statsTable (rows: Array<[string, WindowStats]>): string {
  const ms = (n: number | undefined): string => n === undefined ? '—' : `${n < 10 ? n.toFixed(1) : Math.round(n)} ms`
  return `<div class="scroll"><table class="stats"><thead><tr><th></th><th>req/s</th><th>5xx</th><th>retried</th><th title="the client went away before its answer ended">aborted</th><th>p50</th><th>p95</th><th>p99</th></tr></thead><tbody>${rows.map(([name, s]) =>
    `<tr><th>${e(name)}</th><td>${e(s.rate.toFixed(2))}</td><td>${e(s.status5xx)}</td><td>${e(s.retried)}</td><td>${e(s.aborted)}</td><td>${ms(s.latency?.p50)}</td><td>${ms(s.latency?.p95)}</td><td>${ms(s.latency?.p99)}</td></tr>`).join('')}</tbody></table></div>`
}

export function renderStory (story: RequestStory, options: PageOptions): string {
  const a = story.answer
  const attempts = story.attempts.map((t, i) => `<tr><td>${i + 1}</td><td>${e(t.target)}</td><td>${e(t.phase)}</td><td>${t.error !== null ? `<code>${e(t.error)}</code>` : '—'}</td><td>${e(t.cause ?? '—')}</td><td>${e(t.status ?? '—')}</td><td>${e(Math.round(t.ms))} ms</td></tr>`).join('')
  const body = `<header><p class="muted"><a href="${e(options.base)}">← status</a></p><h1>Request <code>${e(story.id)}</code></h1>
<p><time>${e(story.at)}</time> · ${e(story.method)} on route <code>${e(story.route)}</code> · pool <code>${e(story.pool)}</code> · ${e(story.ms)} ms</p></header>
<section><h2>Answer</h2><p><strong>${e(a.status)}</strong>${a.error !== null ? ` <code>${e(a.error)}</code> (blame: ${e(a.blame)})` : ' delivered after a retry'}${a.cause !== null ? ` — cause <code>${e(a.cause)}</code>` : ''}</p>${a.note !== null ? `<p class="muted">${e(a.note)}</p>` : ''}${story.cache !== undefined ? `<p>Answered from the cache instead (<code>${e(story.cache)}</code>): the client got the stored answer, not the failure.</p>` : ''}</section>
<section><h2>Pool state when it ended</h2><p>${story.poolState.map((p) => `<code>${e(p.target)}</code> ${e(p.state)}`).join(' · ')}</p></section>
<section><h2>Tries</h2><div class="scroll"><table><thead><tr><th>#</th><th>Target</th><th>Phase</th><th>Error</th><th>Cause</th><th>Status</th><th>Time</th></tr></thead><tbody>${attempts}</tbody></table></div></section>`
  return page(`Request ${story.id}`, body, null)
}

export function renderProbe (result: ProbeResult, options: PageOptions): string {
  const phase = (name: string, value: number | null): string => `<tr><th>${e(name)}</th><td>${value === null ? '—' : `${e(value)} ms`}</td></tr>`
  const outcome = result.ok
    ? `<p><strong>${e(result.status)}</strong> from <code>${e(result.url)}</code></p>`
    : `<p><strong class="bad"><code>${e(result.error)}</code></strong> in the ${e(result.phase)} phase${result.cause !== null ? ` — cause <code>${e(result.cause)}</code>` : ''}</p><p class="muted">GET <code>${e(result.url)}</code></p>`
  const body = `<header><p class="muted"><a href="${e(options.base)}">← status</a></p><h1>Probe of <code>${e(result.target)}</code></h1><p class="muted">pool <code>${e(result.pool)}</code> · <time>${e(result.at)}</time></p></header>
<section><h2>Outcome</h2>${outcome}</section>
<section><h2>Phases (from the start)</h2><table><tbody>${phase('DNS lookup', result.ms.dns)}${phase('connected', result.ms.connect)}${phase('TLS handshake done', result.ms.tls)}${phase('first byte', result.ms.firstByte)}${phase('total', result.ms.total)}</tbody></table></section>`
  return page(`Probe ${result.target}`, body, null)
}

function page (title: string, body: string, refresh: number | null): string {
  return htmlDocument(title, STYLE, body, refresh)
}

const STYLE = `
:root{--bg:#f5f6f8;--card:#fff;--text:#1c2330;--muted:#5a6474;--line:#d7dce4;--soft:#eef1f5;--ok:#1d8552;--warn:#a86400;--bad:#c13b28;--radius:12px}
@media (prefers-color-scheme:dark){:root{--bg:#0e1218;--card:#161b23;--text:#e4e8ee;--muted:#98a2b1;--line:#2b323d;--soft:#1d242e;--ok:#4cc38a;--warn:#e0a341;--bad:#ff7d69}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--text);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
code,time{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;overflow-wrap:anywhere}
a{color:inherit}
.page{max-width:64rem;margin:0 auto;padding:1.5rem 1rem}
.page>*{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);padding:1rem 1.2rem;margin:0 0 1rem}
h1{margin:0 0 .3rem;font-size:1.4rem}
h2{margin:0 0 .6rem;font-size:1.1rem}
h3{margin:1rem 0 .4rem;font-size:.95rem;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
p{margin:.2rem 0}
.muted{color:var(--muted);font-size:.9rem}
.bad{color:var(--bad)}
.diagnosis ul{list-style:none;margin:0;padding:0}
.finding{border-left:4px solid var(--warn);padding:.4rem .8rem;margin:0 0 .6rem;background:var(--soft);border-radius:0 8px 8px 0}
.finding.critical{border-color:var(--bad)}
.finding .title{font-weight:600}
.sev{display:inline-block;font-size:.7rem;text-transform:uppercase;letter-spacing:.06em;padding:0 .4rem;border-radius:4px;background:var(--warn);color:var(--card)}
.finding.critical .sev{background:var(--bad)}
.evidence{font-size:.85rem;color:var(--muted)}
.diagnosis.ok{border-left:4px solid var(--ok)}
.targets{display:grid;grid-template-columns:minmax(0,1fr);gap:.6rem}
.target{min-width:0;border:1px solid var(--line);border-radius:10px;padding:.6rem .8rem}
.state{display:inline-block;font-size:.75rem;font-weight:700;text-transform:uppercase;padding:0 .4rem;border-radius:4px;background:var(--ok);color:var(--card)}
.target.unhealthy .state,.target.ejected .state{background:var(--bad)}
.target.failing .state{background:var(--warn)}
.target.draining .state,.target.unknown .state,.target.backup .state{background:var(--muted)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.3rem 0;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.2rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
thead th{color:var(--muted);font-weight:600}
`
