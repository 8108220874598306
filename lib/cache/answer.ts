// A stored answer on its way to the client, and the RFC 9211 Cache-Status that says where an
// answer came from. The policy (http-cache-semantics) gives the headers as they must be served:
// hop-by-hop fields dropped, `Age` and `Date` as of now.
import { Readable } from 'node:stream'
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
  reply.code(status)
  reply.headers(headers)
  if (reply.request.method === 'HEAD' || status === 204 || status === 304) {
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
