// What a well-behaved proxy does to headers on the way through (RFC 9110 §7.6).
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import { constants as http2, type ServerHttp2Stream } from 'node:http2'
import { randomBytes } from 'node:crypto'

/**
 * Hop-by-hop fields (RFC 9110 §7.6.1), besides those the `Connection` field names. Never
 * forwarded, in either direction.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'proxy-connection', 'keep-alive', 'te', 'transfer-encoding', 'upgrade'])

/**
 * What never goes to a target: the hop-by-hop fields, and `Expect`. `Expect: 100-continue` is
 * answered on this hop: Node's server sends the client its 100 Continue before the request
 * reaches the gateway (RFC 9110 §10.1.1 lets a proxy do so). Passed on, it would make undici
 * refuse the whole request (it does not support Expect).
 */
const NOT_FORWARDED_UPSTREAM = new Set([...HOP_BY_HOP, 'expect'])

export interface ForwardingSettings {
  proxyName: string
  requestIdHeader: string
  /** This gateway instance's pseudonym in request `Via` (see `viaPseudonym`). */
  via: string
}

type Headers = IncomingHttpHeaders | OutgoingHttpHeaders

/**
 * Request headers as they go to a target (the target's `host` is set per try, later).
 *
 * The forwarding fields follow Fastify's `trustProxy`, all alike: what a trusted proxy in front
 * says is kept and extended; otherwise an incoming value is the client's claim, not a fact, and
 * is replaced. A field with nothing to say (no Host from an HTTP/1.0 client) is left out.
 */
export function forwardRequestHeaders (request: FastifyRequest, incoming: IncomingHttpHeaders, settings: ForwardingSettings): IncomingHttpHeaders {
  // The one copy of the client's headers this request makes: each try changes it in place.
  const headers = endToEnd(incoming, NOT_FORWARDED_UPSTREAM) as IncomingHttpHeaders
  // Fastify's `ips` is the trusted part of the X-Forwarded-For chain, nearest hop first.
  const ips = request.ips
  const peer = request.socket.remoteAddress ?? request.ip
  headers['x-forwarded-for'] = ips !== undefined && ips.length > 0 ? [...ips].reverse().join(', ') : peer
  headers['x-real-ip'] = request.ip
  const proto = request.protocol
  const host = request.host
  headers['x-forwarded-proto'] = proto
  headers['x-forwarded-host'] = host !== '' ? host : undefined
  const element = forwardedElement(peer, proto, host)
  const claimed = headers.forwarded
  headers.forwarded = claimed !== undefined && trustsPeer(request) ? appendList(claimed, element) : element
  // The protocol this hop received (RFC 9110 §7.6.3): `2` from an HTTP/2 client.
  headers.via = appendList(headers.via, `${receivedVersion(request)} ${settings.via}`)
  headers[settings.requestIdHeader] = request.id
  // TE is hop-by-hop; a gRPC call's `TE: trailers` is made again on this hop, as gRPC asks
  // every hop to send it (and servers may insist): the gateway relays the trailers.
  if (isGrpc(incoming['content-type']) && acceptsTrailers(incoming.te)) headers.te = 'trailers'
  return headers
}

/** A gRPC call: `application/grpc`, or `application/grpc+proto` and the like. */
export function isGrpc (contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/grpc(?:\+[^;\s]*)?\s*(?:;|$)/i.test(contentType)
}

/** The protocol version this hop received, as `Via` writes it: `2` or `1.1`. */
function receivedVersion (request: FastifyRequest): string {
  // Read loosely: a request stand-in without a raw message (unit tests) is HTTP/1.1.
  const raw = request.raw as FastifyRequest['raw'] | undefined
  return raw !== undefined && raw.httpVersionMajor >= 2 ? '2' : '1.1'
}

/** Does a TE field list `trailers` (RFC 9110 §10.1.4)? */
export function acceptsTrailers (te: string | string[] | undefined): boolean {
  if (te === undefined) return false
  return String(te).toLowerCase().split(',').some((coding) => coding.split(';')[0]!.trim() === 'trailers')
}

/** This hop's RFC 7239 `Forwarded` element: who connected, over what, to which host. */
function forwardedElement (peer: string, proto: string, host: string): string {
  // An IPv6 address is quoted and bracketed (RFC 7239 §6); a host with a port needs quotes.
  const node = peer.includes(':') ? `"[${peer}]"` : peer
  return `for=${node};proto=${proto}${host !== '' ? `;host="${host.replace(/["\\]/g, '')}"` : ''}`
}

/**
 * Whether Fastify's `trustProxy` trusts this connection's peer. Fastify keeps its trust
 * function to itself; its `ips` getter applies it, so it is asked about a probe chain of one
 * hop: the answer has two addresses exactly when the peer is trusted.
 */
function trustsPeer (request: FastifyRequest): boolean {
  const ips = ipsGetter(request)
  if (ips === null) return false
  const probe = { raw: { socket: request.socket, headers: { 'x-forwarded-for': '192.0.2.1' } } }
  return (ips.call(probe) as string[]).length > 1
}

function ipsGetter (request: FastifyRequest): (() => unknown) | null {
  for (let proto = Object.getPrototypeOf(request); proto !== null; proto = Object.getPrototypeOf(proto)) {
    const getter = Object.getOwnPropertyDescriptor(proto, 'ips')?.get
    if (getter !== undefined) return getter
  }
  return null
}

export type ResponseHeaders = Record<string, string | string[]>

/**
 * An upstream answer's headers as the client gets them, in one pass over undici's parsed
 * headers (names in lower case, repeated fields as arrays): hop-by-hop fields and those
 * `Connection` names dropped, this hop added to `Via` (`via`: `1.1 <proxyName>`, the public
 * name: the pseudonym must stay unknown to clients).
 */
export function forwardResponseHeaders (upstream: IncomingHttpHeaders, via: string): ResponseHeaders {
  const headers: ResponseHeaders = {}
  const named = connectionNames(upstream.connection)
  for (const name in upstream) {
    // Not a field any server means; as an object key it would set the prototype.
    if (HOP_BY_HOP.has(name) || name === '__proto__' || (named !== null && named.includes(name))) continue
    const value = upstream[name]
    if (value !== undefined) headers[name] = value
  }
  headers.via = appendList(headers.via, via)
  return headers
}

/**
 * A copy of `headers` without the hop-by-hop fields and those `Connection` names. A copy, not
 * deletes: deleting keys turns a header object into a slow dictionary for everything after.
 */
export function endToEnd (headers: Headers, dropped: ReadonlySet<string> = HOP_BY_HOP): Headers {
  const named = connectionNames(headers.connection)
  const kept: Headers = {}
  const names = Object.keys(headers)
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!
    // ':method', ':path' and the like come from an HTTP/2 client: they are not fields.
    if (dropped.has(name) || name.charCodeAt(0) === 58 || (named !== null && named.includes(name))) continue
    kept[name] = headers[name]
  }
  return kept
}

/** The field names a `Connection` field lists, beyond the usual `keep-alive` or `close`. */
function connectionNames (connection: Headers['connection']): string[] | null {
  if (connection === undefined) return null
  const value = String(connection).toLowerCase()
  // The common values name nothing that is not hop-by-hop already: no list to build.
  if (value === 'keep-alive' || value === 'close') return null
  return value.split(',').map((name) => name.trim())
}

const pseudonyms = new WeakMap<object, string>()

/**
 * The name this gateway instance (one per `instance`, the plugin's config) gives itself in the
 * `Via` of requests it forwards: `<proxyName>-<random>`, a pseudonym as RFC 9110 §7.6.3 allows.
 * Loops are detected by it, so a client cannot stop its own request by sending our public name,
 * and two gateways with the same proxyName in a chain are not taken for a loop. Responses carry
 * the public name only, so the pseudonym never reaches a client through the gateway.
 */
export function viaPseudonym (instance: object, proxyName: string): string {
  let name = pseudonyms.get(instance)
  if (name === undefined) {
    name = `${proxyName}-${randomBytes(9).toString('base64url')}`
    pseudonyms.set(instance, name)
  }
  return name
}

/** Does an incoming `Via` show that this request already passed through this gateway instance? */
export function viaContains (via: string | string[] | undefined, pseudonym: string): boolean {
  if (via === undefined) return false
  const entries = (Array.isArray(via) ? via.join(',') : via).split(',')
  return entries.some((entry) => entry.trim().split(/\s+/)[1] === pseudonym)
}

export function appendList (existing: string | string[] | number | undefined, value: string): string {
  if (existing === undefined || existing === '') return value
  return `${Array.isArray(existing) ? existing.join(', ') : String(existing)}, ${value}`
}

/**
 * Ends the client's connection after this answer. HTTP/1 only: HTTP/2 has no Connection field
 * (RFC 9113 §8.2.2, Node refuses one) and its streams end on their own.
 */
export function closeConnectionAfter (reply: FastifyReply): void {
  if (reply.request.raw.httpVersionMajor < 2) reply.header('connection', 'close')
}

/**
 * Cuts an answer that cannot be finished, so the client sees it cut, never complete. HTTP/1
 * closes the connection. HTTP/2 resets the stream with INTERNAL_ERROR (RFC 9113 §5.4.2): a
 * reset with NO_ERROR, which destroying the response sends, reads as a complete body.
 */
export function cutAnswer (reply: FastifyReply): void {
  const stream = (reply.raw as { stream?: ServerHttp2Stream }).stream
  if (stream !== undefined) {
    if (!stream.destroyed) stream.close(http2.NGHTTP2_INTERNAL_ERROR)
    return
  }
  reply.raw.destroy()
}
