// The HTML page a browser gets when the gateway itself fails. It is read by two people: a
// visitor, who needs to know whether to wait or whom to tell (and what to quote), and an
// operator, who needs the target, the cause and the tries. So it shows where on the path the
// request failed, and keeps the request id prominent enough to screenshot.
//
// It is one self-contained string: inline style, no script, no fetched asset (a broken service
// must not also break its error page, and a page with no script cannot run injected code).
// Every reflected value goes through `escapeHtml`.
import type { AttemptRecord } from './failure.js'
import type { Problem } from './problem.js'
import type { Blame, Phase } from './taxonomy.js'

export interface HtmlOptions {
  /** The gateway's name (as in Proxy-Status). */
  proxyName: string
  /** Full exposure: show the operator section (hint, pool, target, cause, attempts). */
  full: boolean
  /** Who to tell, shown to visitors; null when the operators gave none. */
  contact: string | null
}

export function renderHtml (problem: Problem, options: HtmlOptions): string {
  const body = [
    renderSummary(problem),
    renderPath(problem, options.full),
    renderReference(problem),
    renderVisitorAdvice(problem, options.contact),
    options.full ? renderOperatorSection(problem) : '',
    renderFooter(problem, options.proxyName)
  ].filter((part) => part !== '').join('\n')
  return htmlDocument(`${problem.status} ${problem.title}`, STYLE, body)
}

/**
 * A self-contained page the gateway serves (its error pages, the status pages): no script, no
 * fetched asset, readable on a phone, never indexed. `refresh` reloads it every so many seconds.
 */
export function htmlDocument (title: string, style: string, body: string, refresh: number | null = null): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<meta name="color-scheme" content="light dark">
${refresh !== null ? `<meta http-equiv="refresh" content="${refresh}">\n` : ''}<title>${escapeHtml(title)}</title>
<style>${style}</style>
</head>
<body>
<main class="page">
${body}
</main>
</body>
</html>
`
}

/** The five characters that can change the meaning of HTML text or a quoted attribute. */
export function escapeHtml (value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c)
}

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;'
}

// --- Sections ---------------------------------------------------------------------------

function renderSummary (problem: Problem): string {
  return `<header class="summary">
<p class="eyebrow">Error ${escapeHtml(problem.status)} · ${problem.temporary ? 'probably temporary' : 'retrying will not help'}</p>
<h1><span class="status">${escapeHtml(problem.status)}</span> <span class="title">${escapeHtml(problem.title)}</span></h1>
<p class="detail">${escapeHtml(problem.detail)}</p>
<p class="where">${escapeHtml(whereWords(problem.blame, problem.phase))}</p>
</header>`
}

// The path Client → Gateway → Service as a list of five hops (three boxes, two links), so a
// screen reader reads it in order and CSS can lay it out across or down.
type HopId = 'client' | 'client-link' | 'gateway' | 'service-link' | 'service'
type HopState = 'ok' | 'failed' | 'unreached'

const HOPS: readonly HopId[] = ['client', 'client-link', 'gateway', 'service-link', 'service']
const GATEWAY_INDEX = HOPS.indexOf('gateway')

/** Which hop failed, from whose side the fault is on (docs/errors.md "blame"). */
export function failingHop (blame: Blame): HopId {
  switch (blame) {
    case 'client': return 'client'
    case 'gateway': return 'gateway'
    // dns, connect and tls: the wire between the gateway and the service.
    case 'network': return 'service-link'
    case 'upstream': return 'service'
  }
}

/**
 * Hops before the failure worked; hops past it were never reached. The gateway is always
 * reached (it wrote this page), so a client fault leaves it marked as working.
 */
function hopState (index: number, failedIndex: number): HopState {
  if (index === failedIndex) return 'failed'
  return index > Math.max(failedIndex, GATEWAY_INDEX) ? 'unreached' : 'ok'
}

function renderPath (problem: Problem, full: boolean): string {
  const failed = failingHop(problem.blame)
  const failedIndex = HOPS.indexOf(failed)
  // A failed link carries its label under the wire; the list makes room for it.
  const pathClass = isLink(failed) ? 'path link-failed' : 'path'
  // The pool name is an internal: only with full exposure (buildProblem leaves it out anyway).
  const pool = full && typeof problem.pool === 'string' && problem.pool !== '' ? problem.pool : null
  const items = HOPS.map((hop, index) => renderHop(hop, hopState(index, failedIndex), problem.phase, pool))
  return `<section class="path-section" aria-labelledby="path-heading">
<h2 id="path-heading" class="visually-hidden">Where the request failed</h2>
<ol class="${pathClass}">
${items.join('\n')}
</ol>
</section>`
}

const STATE_WORDS: Readonly<Record<HopState, string>> = {
  ok: 'working',
  failed: 'failed here',
  unreached: 'not reached'
}

function renderHop (hop: HopId, state: HopState, phase: Phase, pool: string | null): string {
  const name = hopName(hop)
  // The failed hop says how it failed (the phase); the others say only whether they worked.
  const stateText = state === 'failed' ? `Failed here · ${PHASE_LABELS[phase]}` : STATE_WORDS[state]
  const label = `${name}: ${state === 'failed' ? `failed here (${PHASE_LABELS[phase]})` : STATE_WORDS[state]}`
  const open = `<li class="hop ${isLink(hop) ? 'link' : 'node'} is-${state}" data-hop="${hop}" data-state="${state}" aria-label="${escapeHtml(label)}">`
  if (isLink(hop)) {
    // "Failed here · connect" on one line when stacked; across, "Failed here" over the phase.
    const linkText = state === 'failed' ? `Failed here<span class="sep"> · </span><span class="phase">${escapeHtml(PHASE_LABELS[phase])}</span>` : ''
    return `${open}<span class="wire" aria-hidden="true"></span><span class="hop-state">${linkText}</span></li>`
  }
  const poolLine = hop === 'service' && pool !== null ? `<code class="pool">${escapeHtml(pool)}</code>` : ''
  return `${open}<span class="mark" aria-hidden="true"></span><span class="hop-text"><span class="hop-name">${escapeHtml(name)}</span>${poolLine}<span class="hop-state">${escapeHtml(stateText)}</span></span></li>`
}

function isLink (hop: HopId): boolean {
  return hop === 'client-link' || hop === 'service-link'
}

function hopName (hop: HopId): string {
  switch (hop) {
    case 'client': return 'Client'
    case 'client-link': return 'Client to gateway'
    case 'gateway': return 'Gateway'
    case 'service-link': return 'Gateway to service'
    case 'service': return 'Service'
  }
}

// What a visitor would be asked for when reporting the problem, in one block that fits a
// phone screenshot.
function renderReference (problem: Problem): string {
  return `<section class="reference" aria-label="Reference for this error">
<div class="ref-item ref-id"><span class="ref-key">Request ID</span><code class="ref-value" id="request-id">${escapeHtml(problem.requestId)}</code></div>
<div class="ref-item"><span class="ref-key">Time</span><time class="ref-value" datetime="${escapeHtml(problem.timestamp)}">${escapeHtml(formatTime(problem.timestamp))}</time></div>
<div class="ref-item"><span class="ref-key">Error</span><code class="ref-value">${escapeHtml(problem.error)}</code></div>
<div class="ref-item"><span class="ref-key">Address</span><code class="ref-value">${escapeHtml(problem.instance)}</code></div>
</section>`
}

function renderVisitorAdvice (problem: Problem, contact: string | null): string {
  const who = contact !== null && contact !== ''
    ? `the site's operators at <strong class="contact">${escapeHtml(contact)}</strong>`
    : "the site's operators"
  const quote = `and quote the request ID <code>${escapeHtml(problem.requestId)}</code>`
  let first: string
  let then: string
  if (problem.blame === 'client') {
    first = problem.temporary
      ? 'Wait a moment, then send the request again.'
      : 'Check the address and what was sent, then try again.'
    then = `If you think the request was right, tell ${who} ${quote}.`
  } else if (problem.temporary) {
    first = 'This is usually temporary. Wait a few moments, then reload the page.'
    then = `If it keeps failing, tell ${who} ${quote}.`
  } else {
    first = 'Reloading will not fix this; the site needs a change on its side.'
    then = `Please tell ${who} ${quote}.`
  }
  return `<section class="advice visitor" aria-labelledby="visitor-heading">
<h2 id="visitor-heading">What you can do</h2>
<p>${first}</p>
<p>${then}</p>
</section>`
}

// Full exposure only: the operator's words and the internals behind them.
function renderOperatorSection (problem: Problem): string {
  const facts: Array<[string, string | null | undefined]> = [
    ['Pool', problem.pool],
    ['Target', problem.target],
    ['Cause', problem.cause],
    ['Error', problem.error],
    ['Blame', problem.blame],
    ['Phase', problem.phase]
  ]
  const rows = facts.map(([key, value]) =>
    `<div><dt>${key}</dt><dd><code>${value === null || value === undefined || value === '' ? '–' : escapeHtml(value)}</code></dd></div>`)
  return `<section class="advice operator" aria-labelledby="operator-heading">
<h2 id="operator-heading">What an operator can do</h2>
<p class="hint">${escapeHtml(problem.hint)}</p>
<dl class="facts">
${rows.join('\n')}
</dl>
${renderAttempts(problem.attempts ?? [])}
<p class="note">Shown because this request has full error exposure; the public page leaves these out.</p>
</section>`
}

function renderAttempts (attempts: readonly AttemptRecord[]): string {
  if (attempts.length === 0) return ''
  const rows = attempts.map((a, i) => `<tr class="attempt">
<td data-label="#">${i + 1}</td>
<td data-label="Target"><code>${escapeHtml(a.target)}</code></td>
<td data-label="Error">${escapeHtml(a.error ?? (a.status !== undefined ? `answered ${a.status}` : 'answered'))}</td>
<td data-label="Cause">${escapeHtml(a.cause ?? '–')}</td>
<td data-label="Phase">${escapeHtml(a.phase)}</td>
<td data-label="ms" class="num">${escapeHtml(Math.round(a.ms))}</td>
</tr>`)
  return `<table class="attempts">
<caption>${attempts.length === 1 ? '1 try' : `${attempts.length} tries`}, in order</caption>
<thead><tr><th scope="col">#</th><th scope="col">Target</th><th scope="col">Error</th><th scope="col">Cause</th><th scope="col">Phase</th><th scope="col" class="num">ms</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`
}

function renderFooter (problem: Problem, proxyName: string): string {
  return `<footer class="footer">Answered by the gateway <code>${escapeHtml(proxyName)}</code> · ${escapeHtml(problem.status)} ${escapeHtml(problem.error)}</footer>`
}

// --- Words ------------------------------------------------------------------------------

const BLAME_WORDS: Readonly<Record<Blame, string>> = {
  client: 'The request could not be handled as sent',
  gateway: 'The gateway stopped the request',
  network: 'The network between the gateway and the service failed',
  upstream: 'The service behind the gateway failed'
}

/** One sentence that says the same as the marked path, for those who do not see it. */
function whereWords (blame: Blame, phase: Phase): string {
  // A client's request fails on arrival: the phase adds nothing a visitor can use.
  return blame === 'client' ? `${BLAME_WORDS.client}.` : `${BLAME_WORDS[blame]} ${PHASE_WORDS[phase]}.`
}

const PHASE_WORDS: Readonly<Record<Phase, string>> = {
  route: 'before the request could be sent on',
  queue: 'while the request waited for a free connection',
  dns: "when the gateway looked up the service's address",
  connect: 'when the gateway tried to connect',
  tls: 'during the secure-connection handshake',
  send: 'while the request was being sent',
  headers: 'while the gateway waited for the answer',
  body: 'while the answer was being received'
}

const PHASE_LABELS: Readonly<Record<Phase, string>> = {
  route: 'routing',
  queue: 'queue',
  dns: 'address lookup',
  connect: 'connect',
  tls: 'TLS handshake',
  send: 'sending',
  headers: 'waiting for answer',
  body: 'receiving answer'
}

/** `2025-06-01 12:34:56 UTC`: unambiguous for someone quoting it across time zones. */
function formatTime (timestamp: string): string {
  const date = new Date(timestamp)
  if (Number.isNaN(date.getTime())) return timestamp
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
}

// --- Style ------------------------------------------------------------------------------
// System fonts only and no url(): nothing on this page is fetched.
const STYLE = `
:root{--bg:#f5f6f8;--card:#fff;--text:#1c2330;--muted:#5a6474;--line:#d7dce4;--soft:#eef1f5;--ok:#1d8552;--bad:#c13b28;--bad-soft:#fcefec;--idle:#a0a8b5;--radius:12px}
@media (prefers-color-scheme:dark){:root{--bg:#0e1218;--card:#161b23;--text:#e4e8ee;--muted:#98a2b1;--line:#2b323d;--soft:#1d242e;--ok:#4cc38a;--bad:#ff7d69;--bad-soft:#2c1714;--idle:#5e6877}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--text);font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
code,time{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:.92em}
.page{max-width:46rem;margin:0 auto;padding:2.5rem 1.25rem 2rem}
.page>*{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);padding:1.25rem 1.4rem;margin:0 0 1rem}
.page>.summary{border-top:4px solid var(--bad)}
.eyebrow{margin:0 0 .3rem;color:var(--muted);font-size:.8rem;letter-spacing:.06em;text-transform:uppercase}
h1{margin:0 0 .6rem;font-size:1.6rem;line-height:1.25;font-weight:650}
h1 .status{color:var(--bad);font-variant-numeric:tabular-nums;margin-right:.25rem}
h2{margin:0 0 .6rem;font-size:1.05rem;font-weight:650}
.detail{margin:0 0 .4rem;font-size:1.05rem}
.where{margin:0;color:var(--muted)}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.path{list-style:none;margin:0;padding:1.6rem 0 .4rem;display:flex;align-items:center}
.hop.node{flex:0 1 10rem;min-width:0;display:flex;align-items:center;gap:.6rem;padding:.6rem .75rem;border:1px solid var(--line);border-radius:10px;background:var(--soft)}
.hop-text{display:flex;flex-direction:column;min-width:0}
.hop-name{font-weight:600}
.hop-state{font-size:.8rem;color:var(--muted)}
.pool{font-size:.8rem;overflow-wrap:anywhere}
.mark{flex:none;width:.7rem;height:.7rem;border-radius:50%;background:var(--ok)}
.hop.node.is-failed{border-color:var(--bad);background:var(--bad-soft);box-shadow:0 0 0 3px color-mix(in srgb,var(--bad) 18%,transparent)}
.hop.node.is-failed .mark{background:var(--bad);border-radius:2px;transform:rotate(45deg)}
.hop.node.is-failed .hop-state{color:var(--bad);font-weight:600}
.hop.node.is-unreached{border-style:dashed;background:transparent;color:var(--muted)}
.hop.node.is-unreached .mark{background:transparent;border:2px solid var(--idle)}
.hop.link{flex:1 1 2.5rem;min-width:1.5rem;position:relative;display:flex;align-items:center}
.wire{display:block;width:100%;border-top:2px solid var(--ok)}
.hop.link.is-unreached .wire{border-top:2px dotted var(--idle)}
.hop.link.is-failed .wire{border-top:3px dashed var(--bad)}
.hop.link .hop-state{position:absolute;left:0;right:0;top:1rem;text-align:center;line-height:1.25;color:var(--bad);font-weight:600}
.path.link-failed{padding-bottom:3rem}
.hop.link.is-failed::after{content:"\\2715";position:absolute;left:50%;top:50%;width:1.3rem;height:1.3rem;margin:-.65rem 0 0 -.65rem;border-radius:50%;background:var(--bad);color:var(--card);font-size:.75rem;line-height:1.3rem;text-align:center;font-weight:700}
.reference{display:grid;grid-template-columns:repeat(auto-fit,minmax(13rem,1fr));gap:.9rem 1.4rem;background:var(--soft)}
.ref-item{display:flex;flex-direction:column;min-width:0}
.ref-key{font-size:.75rem;letter-spacing:.06em;text-transform:uppercase;color:var(--muted)}
.ref-value{overflow-wrap:anywhere;font-size:.95rem}
.ref-id{grid-column:1/-1}
.ref-id .ref-value{font-size:1.2rem;font-weight:600;user-select:all}
.advice p{margin:0 0 .6rem}
.advice p:last-child{margin-bottom:0}
.advice code{overflow-wrap:anywhere}
.contact{overflow-wrap:anywhere}
.hint{white-space:pre-wrap;overflow-wrap:anywhere;border-left:3px solid var(--bad);padding:.2rem 0 .2rem .8rem}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.5rem 1.2rem;margin:1rem 0}
.facts div{min-width:0}
.facts dt{font-size:.75rem;letter-spacing:.06em;text-transform:uppercase;color:var(--muted)}
.facts dd{margin:0;overflow-wrap:anywhere}
.attempts{width:100%;border-collapse:collapse;font-size:.9rem;margin:.5rem 0 1rem}
.attempts caption{text-align:left;color:var(--muted);font-size:.85rem;padding-bottom:.3rem}
.attempts th,.attempts td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
.attempts th{font-size:.75rem;letter-spacing:.05em;text-transform:uppercase;color:var(--muted);font-weight:600}
.attempts .num{text-align:right;font-variant-numeric:tabular-nums}
.note{font-size:.85rem;color:var(--muted)}
/* Wide screens: a failed link's label is "Failed here" over the phase (no dangling "·"), and the
   short columns of the attempts table keep their words whole (only Target and Cause may break). */
@media (min-width:601px){
.hop.link .sep{display:none}
.hop.link .phase{display:block}
.attempts th,.attempts td:not([data-label=Target]):not([data-label=Cause]){white-space:nowrap}
}
.page>.footer{background:none;border:none;padding:.25rem 0;text-align:center;color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}
@media (max-width:600px){
.page{padding:1rem .75rem}
.page>*{padding:1rem}
h1{font-size:1.35rem}
.path,.path.link-failed{flex-direction:column;align-items:stretch;padding:.2rem 0}
.hop.node{flex:none}
.hop.link{flex:none;min-height:2.2rem;margin-left:1.05rem;padding-left:1.2rem;border-left:2px solid var(--ok)}
.hop.link .wire{display:none}
.hop.link.is-unreached{border-left:2px dotted var(--idle)}
.hop.link.is-failed{border-left:3px dashed var(--bad)}
.hop.link .hop-state{position:static;transform:none;white-space:normal}
.hop.link.is-failed::after{left:-.75rem;margin-left:0}
.attempts thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
.attempts tr{display:block;border:1px solid var(--line);border-radius:8px;margin-bottom:.6rem;padding:.3rem .2rem}
.attempts td{display:flex;justify-content:space-between;gap:1rem;border:none;padding:.2rem .5rem;text-align:right}
.attempts td::before{content:attr(data-label);color:var(--muted);text-align:left;font-size:.8rem}
.attempts .num{text-align:right}
}
`
