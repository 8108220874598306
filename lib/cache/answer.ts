// A stored answer on its way to the client, and the RFC 9211 Cache-Status that says where an
// answer came from. The policy (http-cache-semantics) gives the headers as they must be served:
// hop-by-hop fields dropped, `Age` and `Date` as of now.
import { Readable } from 'node:stream'
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply } from 'fastify'
import type { Policy } from './policy.js'
import type { StoredAnswer } from './store.js'

/** Why a request went upstream (RFC 9211 `fwd`): no entry, no matching variant, stale, or the client asked. */
export type Forwarded = 'miss' | 'vary-miss' | 'stale' | 'request' | 'method' | 'bypass'

/** Cache-Status member of an answer the cache gave without the upstream (fresh, or stale on purpose). */
export function hitStatus (name: string, detail: string | null = null): string {
  return detail === null ? `${name}; hit` : `${name}; hit; detail=${detail}`
}

/** Cache-Status member of an answer that went upstream. */
export function forwardStatus (name: string, fwd: Forwarded, status: number | null, stored: boolean, collapsed = false, detail: string | null = null): string {
  let member = `${name}; fwd=${fwd}`
  if (status !== null) member += `; fwd-status=${status}`
  if (stored) member += '; stored'
  if (collapsed) member += '; collapsed'
  if (detail !== null) member += `; detail=${detail}`
  return member
}

/**
 * Sends a stored answer: its status and headers as the policy serves them now (with `Age`),
 * `cacheStatus`, and its body (none for HEAD or a status without one).
 */
export function sendStored (reply: FastifyReply, stored: StoredAnswer, policy: Policy, cacheStatus: string, proxyStatus: string | null = null): void {
  const headers = policy.responseHeaders()
  const status = stored.policy.st
  headers['cache-status'] = cacheStatus
  if (proxyStatus !== null) headers['proxy-status'] = proxyStatus
  // RFC 9111 §4.3.2: the client's own condition is answered from the stored answer.
  const notModified = status === 200 && conditionHolds(reply.request.headers, headers)
  if (notModified) Reflect.deleteProperty(headers, 'content-length')
  reply.code(notModified ? 304 : status)
  reply.headers(headers)
  if (notModified || reply.request.method === 'HEAD' || status === 204 || status === 304) {
    reply.send()
    return
  }
  // Without a Content-Type Fastify would label a Buffer application/octet-stream: a body the
  // upstream sent unlabelled goes as a stream, labelled as it was (not at all).
  if (headers['content-type'] === undefined) {
    reply.header('content-length', stored.body.length)
    reply.send(Readable.from([stored.body]))
    return
  }
  reply.send(stored.body)
}

/**
 * Whether the client's condition says it has this answer already (RFC 9110 §13.1.2, §13.1.3):
 * If-None-Match by weak comparison (or `*`), else If-Modified-Since against Last-Modified.
 */
function conditionHolds (request: IncomingHttpHeaders, stored: Record<string, string | string[] | undefined>): boolean {
  const etag = stored.etag
  const ifNoneMatch = request['if-none-match']
  if (ifNoneMatch !== undefined) {
    if (typeof etag !== 'string') return ifNoneMatch.trim() === '*'
    const weak = (tag: string): string => tag.trim().replace(/^W\//, '')
    return ifNoneMatch.split(',').some((tag) => tag.trim() === '*' || weak(tag) === weak(etag))
  }
  const since = request['if-modified-since']
  const modified = stored['last-modified']
  if (since === undefined || typeof modified !== 'string') return false
  const sinceMs = Date.parse(since)
  const modifiedMs = Date.parse(modified)
  return Number.isFinite(sinceMs) && Number.isFinite(modifiedMs) && modifiedMs <= sinceMs
}
