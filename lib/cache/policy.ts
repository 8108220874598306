// What may be stored, for whom, for how long, and whether a stored answer may be used: RFC 9111
// as `http-cache-semantics` implements it for a shared cache. This file only feeds it the
// request and response and reads its verdicts; the one thing the library has no verdict for
// (how long past its freshness an answer may stand in for an error, RFC 5861) reads the
// response's own directives and the route's windows here.
import CachePolicy from 'http-cache-semantics'
import type { IncomingHttpHeaders } from 'node:http'

export type Policy = CachePolicy
export type PolicyObject = CachePolicy.CachePolicyObject
type Headers = CachePolicy.Headers

/** The request as the policy sees it. */
export interface PolicyRequest {
  method: string
  url: string
  headers: IncomingHttpHeaders
}

/** What the route adds to the response's own windows (milliseconds; 0: nothing). */
export interface StaleWindows {
  staleIfError: number
  staleWhileRevalidate: number
}

/**
 * The request headers a stored policy keeps: those its Vary names (to match later requests),
 * and what decides storing. Authorization only says it was there: its value is never stored.
 */
function keptRequestHeaders (request: IncomingHttpHeaders, vary: string | string[] | undefined): Headers {
  const kept: Headers = { host: request.host }
  if (request['cache-control'] !== undefined) kept['cache-control'] = request['cache-control']
  if (request.pragma !== undefined) kept.pragma = request.pragma
  if (request.authorization !== undefined) kept.authorization = '(present)'
  for (const name of varyNames(vary)) {
    if (name !== 'authorization' && request[name] !== undefined) kept[name] = request[name]
  }
  return kept
}

/** The header names a Vary field lists, in lower case. */
export function varyNames (vary: string | string[] | undefined): string[] {
  if (vary === undefined) return []
  return (Array.isArray(vary) ? vary.join(',') : vary).split(',').map((name) => name.trim().toLowerCase()).filter((name) => name !== '')
}

/** The policy of a response to `request`, as a shared cache reads it. */
export function policyOf (request: PolicyRequest, status: number, headers: Headers): Policy {
  return new CachePolicy(
    { method: request.method, url: request.url, headers: keptRequestHeaders(request.headers, headers.vary) },
    { status, headers },
    { shared: true }
  )
}

/** Policies already made from a stored object: a memory store hands out the same object on every hit. */
const restored = new WeakMap<PolicyObject, Policy>()

/** The policy of a stored answer. Policies are only read once made, so one serves every hit. */
export function restorePolicy (object: PolicyObject): Policy {
  let policy = restored.get(object)
  if (policy === undefined) {
    policy = CachePolicy.fromObject(object)
    restored.set(object, policy)
  }
  return policy
}

/**
 * Whether to store the answer: RFC 9111 allows it (the library's storable()) and it has a
 * freshness lifetime. An answer that is stale from the start (no-cache, proxy-revalidate,
 * Set-Cookie without `public`, `Vary: *`) is not kept: a cache is never obliged to store, and
 * such an answer could not be served without asking the upstream anyway.
 */
export function shouldStore (policy: Policy): boolean {
  return policy.storable() && policy.maxAge() > 0
}

/** The response's Cache-Control directives (names in lower case, values unquoted). */
function directives (policy: Policy): Map<string, string> {
  const out = new Map<string, string>()
  const field = policy.toObject().resh['cache-control']
  if (field === undefined) return out
  for (const part of (Array.isArray(field) ? field.join(',') : field).split(',')) {
    const [name, value] = part.split('=')
    if (name === undefined || name.trim() === '') continue
    out.set(name.trim().toLowerCase(), (value ?? '').trim().replace(/^"|"$/g, ''))
  }
  return out
}

function seconds (value: string | undefined): number {
  const n = Number(value)
  return Number.isFinite(n) && n > 0 ? n : 0
}

/**
 * RFC 9111 §4.2.4: a stale answer is never served where the response forbids it
 * (must-revalidate, proxy-revalidate, no-cache; the library gives those no freshness at all).
 */
function mayServeStale (policy: Policy, cc: Map<string, string>): boolean {
  return policy.maxAge() > 0 && !cc.has('must-revalidate') && !cc.has('proxy-revalidate') && !cc.has('no-cache')
}

/** Seconds past its freshness that the answer may stand in for a failure (RFC 5861 stale-if-error). */
export function staleIfErrorSeconds (policy: Policy, windows: StaleWindows): number {
  const cc = directives(policy)
  if (!mayServeStale(policy, cc)) return 0
  return Math.max(seconds(cc.get('stale-if-error')), windows.staleIfError / 1000)
}

/** Seconds past its freshness that the answer may be served while it is refreshed (RFC 5861). */
export function staleWhileRevalidateSeconds (policy: Policy, windows: StaleWindows): number {
  const cc = directives(policy)
  if (!mayServeStale(policy, cc)) return 0
  return Math.max(seconds(cc.get('stale-while-revalidate')), windows.staleWhileRevalidate / 1000)
}

/** The stored answer may stand in for a failure now. */
export function usableOnError (policy: Policy, windows: StaleWindows): boolean {
  return policy.age() < policy.maxAge() + staleIfErrorSeconds(policy, windows)
}

/**
 * Seconds a stale answer with a validator (ETag, Last-Modified) is kept to be revalidated with a
 * conditional request: nginx's default `inactive` time for its cache.
 */
export const KEPT_FOR_REVALIDATION = 600

/**
 * How long a store keeps the answer, in ms: its freshness left, plus the longest stale window
 * it may still serve in (the response's own, the route's), or the time it may be revalidated in.
 */
export function keepFor (policy: Policy, windows: StaleWindows): number {
  const headers = policy.toObject().resh
  const validated = headers.etag !== undefined || headers['last-modified'] !== undefined
  const extra = Math.max(staleIfErrorSeconds(policy, windows), staleWhileRevalidateSeconds(policy, windows), validated ? KEPT_FOR_REVALIDATION : 0)
  return Math.max(policy.timeToLive(), Math.round((policy.maxAge() - policy.age() + extra) * 1000))
}

/** The request asks that no stored answer be used without asking the upstream (RFC 9111 §5.2.1.4). */
export function requestRefusesStored (headers: IncomingHttpHeaders): boolean {
  const cc = headers['cache-control']
  return (cc !== undefined && /(?:^|,)\s*no-cache\s*(?:,|$)/i.test(cc)) || (cc === undefined && headers.pragma !== undefined && /no-cache/i.test(headers.pragma))
}
