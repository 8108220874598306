// A route's own header rewriters (routes[].rewriteRequestHeaders, rewriteResponseHeaders): the
// app's code, run after the gateway's forwarding rules (forwarding.ts) and before Location
// rewriting (location.ts). What they return is checked here, once: a throw, a promise or
// something that is not a header object ends the request as the gateway's own failure
// (proxy_internal_error, cause FST_UPSTREAM_REWRITE_FAILED), never the process.
import type { FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import type { RewriteRequestHeaders, RewriteResponseHeaders } from '../options/types.js'
import { GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import { HOP_BY_HOP, type ResponseHeaders } from './forwarding.js'

/** Fields a rewriter cannot set: they frame this hop's message, which the gateway owns. */
const NOT_REWRITTEN_UPSTREAM: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'expect'])

/** The request's headers after the route's rewriter, and the Host it pinned (null: each target's own). */
export interface RewrittenRequest {
  headers: Record<string, string | string[]>
  host: string | null
}

/**
 * Runs rewriteRequestHeaders once per request (a retry sends what it returned). It sees the
 * client's Host; a different Host it returns goes to every target instead of the target's own.
 * Throws a GatewayError (rewriteFailed) when the rewriter fails.
 */
export function rewriteRequest (rewrite: RewriteRequestHeaders, request: FastifyRequest, headers: Record<string, string | string[]>): RewrittenRequest {
  const given = headers.host
  const result = run('rewriteRequestHeaders', () => rewrite(request, headers as IncomingHttpHeaders))
  const rewritten = normalize('rewriteRequestHeaders', result, NOT_REWRITTEN_UPSTREAM)
  const host = rewritten.host
  return { headers: rewritten, host: typeof host === 'string' && host !== given ? host : null }
}

/**
 * Runs rewriteResponseHeaders on an answer the client is about to get (nothing of it has been
 * sent). The framing stays the upstream's: its Content-Length is kept whatever the rewriter did.
 */
export function rewriteResponse (rewrite: RewriteResponseHeaders, headers: ResponseHeaders, request: FastifyRequest, status: number): ResponseHeaders {
  const length = headers['content-length']
  const result = run('rewriteResponseHeaders', () => rewrite(headers as IncomingHttpHeaders, request, status))
  const rewritten = normalize('rewriteResponseHeaders', result, HOP_BY_HOP)
  if (length !== undefined) rewritten['content-length'] = length
  else Reflect.deleteProperty(rewritten, 'content-length')
  return rewritten
}

function run (name: string, call: () => unknown): unknown {
  let result: unknown
  try {
    result = call()
  } catch (err) {
    throw new GatewayError(GATEWAY_CODES.rewriteFailed, `The route's ${name} threw: ${err instanceof Error ? err.message : String(err)}.`, { cause: err })
  }
  if (typeof (result as { then?: unknown } | null)?.then === 'function') {
    // A promise cannot be waited for here (the headers are needed now); a rejection would go unheard.
    ;(result as Promise<unknown>).then(undefined, () => {})
    throw new GatewayError(GATEWAY_CODES.rewriteFailed, `The route's ${name} returned a promise; it must return the headers synchronously (do asynchronous work in a preHandler hook).`)
  }
  return result
}

/**
 * A fresh header object with names in lower case: values as strings (numbers are turned into
 * strings), fields without a value left out, the fields that frame this hop (`dropped`) left
 * out. Anything else is the rewriter's mistake.
 */
function normalize (name: string, result: unknown, dropped: ReadonlySet<string>): Record<string, string | string[]> {
  if (typeof result !== 'object' || result === null || Array.isArray(result)) {
    throw new GatewayError(GATEWAY_CODES.rewriteFailed, `The route's ${name} returned ${result === null ? 'null' : typeof result} instead of a header object; return the headers it was given, changed.`)
  }
  const headers: Record<string, string | string[]> = {}
  for (const key of Object.keys(result)) {
    const lower = key.toLowerCase()
    const value = (result as Record<string, unknown>)[key]
    if (value === undefined || value === null || dropped.has(lower) || lower === '__proto__') continue
    if (typeof value === 'string') headers[lower] = value
    else if (typeof value === 'number') headers[lower] = String(value)
    else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) headers[lower] = value as string[]
    else throw new GatewayError(GATEWAY_CODES.rewriteFailed, `The route's ${name} returned header "${lower}" as ${Array.isArray(value) ? 'an array of non-strings' : typeof value}; a header is a string or an array of strings.`)
  }
  return headers
}
