// What a well-behaved proxy does to headers on the way through (RFC 9110 §7.6).
import type { FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

/**
 * Hop-by-hop fields other than `Connection` and the names it lists, which are removed first
 * (reply-from already does that for requests; `stripHopByHop` does it for responses).
 */
const HOP_BY_HOP = ['proxy-connection', 'keep-alive', 'te', 'transfer-encoding', 'upgrade']

export interface ForwardingSettings {
  proxyName: string
  requestIdHeader: string
}

/** Request headers as they go to a target (the target's `host` is set per try, later). */
export function forwardRequestHeaders (request: FastifyRequest, headers: IncomingHttpHeaders, settings: ForwardingSettings): IncomingHttpHeaders {
  stripHopByHop(headers)
  // Without trustProxy, an incoming X-Forwarded-For is the client's claim, not a fact: start
  // the chain afresh. With it, Fastify's `ips` is the trusted part, nearest hop first.
  const ips = request.ips
  headers['x-forwarded-for'] = ips !== undefined && ips.length > 0 ? [...ips].reverse().join(', ') : (request.socket.remoteAddress ?? request.ip)
  headers['x-forwarded-proto'] = request.protocol
  headers['x-forwarded-host'] = request.host
  headers.via = appendList(headers.via, `1.1 ${settings.proxyName}`)
  headers[settings.requestIdHeader] = request.id
  return headers
}

/** Response headers as they go to the client. */
export function forwardResponseHeaders (headers: IncomingHttpHeaders | OutgoingHttpHeaders, settings: ForwardingSettings): void {
  stripHopByHop(headers)
  headers.via = appendList(headers.via as string | string[] | undefined, `1.1 ${settings.proxyName}`)
}

export function stripHopByHop (headers: IncomingHttpHeaders | OutgoingHttpHeaders): void {
  const connection = headers.connection
  if (connection !== undefined) {
    for (const name of String(connection).split(',')) {
      const key = name.trim().toLowerCase()
      if (key !== '') delete headers[key]
    }
    delete headers.connection
  }
  for (const name of HOP_BY_HOP) delete headers[name]
}

/** Does an incoming `Via` show that this request already passed through this gateway? */
export function viaContains (via: string | string[] | undefined, proxyName: string): boolean {
  if (via === undefined) return false
  const entries = (Array.isArray(via) ? via.join(',') : via).split(',')
  return entries.some((entry) => entry.trim().split(/\s+/)[1] === proxyName)
}

export function appendList (existing: string | string[] | number | undefined, value: string): string {
  if (existing === undefined || existing === '') return value
  return `${Array.isArray(existing) ? existing.join(', ') : String(existing)}, ${value}`
}
