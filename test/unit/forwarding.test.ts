// lib/proxy/forwarding.ts without a socket: hop-by-hop fields, Via, Forwarded and the
// X-Forwarded-* fields, on fake requests.
import t from 'tap'
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { util as undiciUtil } from 'undici'
import {
  appendList, closeConnectionAfter, endToEnd, forwardRequestHeaders, forwardResponseHeaders, HOP_BY_HOP, viaContains, viaPseudonym
} from '../../lib/proxy/forwarding.js'

const settings = { proxyName: 'gw', requestIdHeader: 'x-request-id', via: 'gw-pseudo' }

/** A request as Fastify gives one; `trusted` makes its `ips` getter trust the peer, as trustProxy would. */
function fakeRequest (over: { ips?: string[], ip?: string, remoteAddress?: string | undefined, protocol?: string, host?: string, trusted?: boolean } = {}): FastifyRequest {
  const trusted = over.trusted ?? false
  class Req {
    get ips (): string[] | undefined {
      const self = this as unknown as { raw?: { headers: Record<string, string> } }
      // The probe trustsPeer makes: a chain of one hop, answered as Fastify's getter would.
      if (self.raw !== undefined) return trusted ? ['192.0.2.1', '10.0.0.1'] : ['10.0.0.1']
      return over.ips
    }
  }
  const req = new Req() as unknown as Record<string, unknown>
  req.id = 'req-1'
  req.ip = over.ip ?? '10.0.0.1'
  req.protocol = over.protocol ?? 'http'
  req.host = over.host ?? 'gw.example'
  req.socket = { remoteAddress: 'remoteAddress' in over ? over.remoteAddress : '10.0.0.1' }
  return req as unknown as FastifyRequest
}

t.test('HOP_BY_HOP names the RFC 9110 fields', async (t) => {
  t.same([...HOP_BY_HOP].sort(), ['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade'])
})

t.test('forwardRequestHeaders: hop-by-hop and Expect dropped, this hop added', async (t) => {
  const headers = forwardRequestHeaders(fakeRequest(), {
    host: 'gw.example',
    accept: '*/*',
    connection: 'keep-alive, x-secret',
    'x-secret': 's',
    te: 'trailers',
    expect: '100-continue',
    'keep-alive': 'timeout=5',
    upgrade: 'h2c',
    'transfer-encoding': 'chunked',
    'proxy-connection': 'x',
    via: '1.0 edge',
    forwarded: 'for=6.6.6.6'
  }, settings)
  t.same(headers, {
    host: 'gw.example',
    accept: '*/*',
    via: '1.0 edge, 1.1 gw-pseudo',
    forwarded: 'for=10.0.0.1;proto=http;host="gw.example"',
    'x-forwarded-for': '10.0.0.1',
    'x-real-ip': '10.0.0.1',
    'x-forwarded-proto': 'http',
    'x-forwarded-host': 'gw.example',
    'x-request-id': 'req-1'
  }, 'an untrusted Forwarded claim is replaced, the x-secret the Connection field named is dropped')
})

t.test('forwardRequestHeaders: a trusted proxy\'s chain is kept and extended', async (t) => {
  const headers = forwardRequestHeaders(fakeRequest({ trusted: true, ips: ['10.0.0.1', '203.0.113.9'], ip: '203.0.113.9', protocol: 'https' }),
    { forwarded: 'for=203.0.113.9', 'x-forwarded-for': '203.0.113.9' }, settings)
  t.equal(headers['x-forwarded-for'], '203.0.113.9, 10.0.0.1', 'client first, then each hop')
  t.equal(headers['x-real-ip'], '203.0.113.9')
  t.equal(headers.forwarded, 'for=203.0.113.9, for=10.0.0.1;proto=https;host="gw.example"')
  t.equal(headers['x-forwarded-proto'], 'https')
})

t.test('forwardRequestHeaders: no Host, an IPv6 peer, a quote in the host, no socket address', async (t) => {
  const noHost = forwardRequestHeaders(fakeRequest({ host: '', remoteAddress: '::1', ip: '::1' }), {}, settings)
  t.equal(noHost['x-forwarded-host'], undefined)
  t.equal(noHost.forwarded, 'for="[::1]";proto=http')
  t.equal(forwardRequestHeaders(fakeRequest({ host: 'a"b\\c' }), {}, settings).forwarded, 'for=10.0.0.1;proto=http;host="abc"')
  t.equal(forwardRequestHeaders(fakeRequest({ remoteAddress: undefined, ip: '10.9.9.9' }), {}, settings)['x-forwarded-for'], '10.9.9.9', 'the request ip when the socket has none')
  t.equal(forwardRequestHeaders(fakeRequest({ ips: [] }), {}, settings)['x-forwarded-for'], '10.0.0.1', 'an empty chain is the peer')
})

t.test('forwardRequestHeaders: a request without an ips getter trusts no claim', async (t) => {
  const plain = { id: 'r', ip: '10.0.0.1', protocol: 'http', host: 'h', socket: { remoteAddress: '10.0.0.1' } } as unknown as FastifyRequest
  t.equal(forwardRequestHeaders(plain, { forwarded: 'for=1.2.3.4' }, settings).forwarded, 'for=10.0.0.1;proto=http;host="h"')
})

t.test('forwardResponseHeaders: one pass over undici\'s parsed headers', async (t) => {
  // As undici hands them over: its own parse of the raw list (repeats as arrays, a
  // `__proto__` field as an own property).
  const parsed = (raw: string[]): IncomingHttpHeaders => undiciUtil.parseHeaders(raw.map((s) => Buffer.from(s, 'latin1'))) as IncomingHttpHeaders
  const raw = ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'set-cookie', 'b=2', 'SET-COOKIE', 'c=3', 'Connection', 'close, X-Drop', 'connection', 'x-also',
    'X-Drop', 'gone', 'x-also', 'gone', 'Keep-Alive', 'timeout=5', 'Transfer-Encoding', 'chunked', '__proto__', 'x', 'Via', '1.0 inner', 'caf\u00e9', 'v\u00e9']
  const forwarded = forwardResponseHeaders(parsed(raw), '1.1 gw')
  t.same(forwarded, {
    'content-type': 'text/plain',
    'set-cookie': ['a=1', 'b=2', 'c=3'],
    via: '1.0 inner, 1.1 gw',
    café: 'v\u00e9'
  })
  t.equal(Object.getPrototypeOf(forwarded), Object.prototype, 'a __proto__ field sets no prototype')
  t.same(forwardResponseHeaders(parsed(['connection', 'keep-alive', 'keep-alive', 'x']), '1.1 gw'), { via: '1.1 gw' })
})

t.test('endToEnd: a copy without hop-by-hop fields, named fields or pseudo-headers', async (t) => {
  const incoming = { ':path': '/x', connection: 'Close', a: '1', te: 'trailers' }
  t.same(endToEnd(incoming), { a: '1' })
  t.same(incoming, { ':path': '/x', connection: 'Close', a: '1', te: 'trailers' }, 'the original is untouched')
  t.same(endToEnd({ connection: 'keep-alive', a: '1' }), { a: '1' })
  t.same(endToEnd({ connection: 'x-a ,  X-B', 'x-a': '1', 'x-b': '2', 'x-c': '3' }), { 'x-c': '3' })
  t.same(endToEnd({ a: '1', b: '2' }, new Set(['b'])), { a: '1' })
})

t.test('appendList, viaContains, viaPseudonym', async (t) => {
  t.equal(appendList(undefined, 'x'), 'x')
  t.equal(appendList('', 'x'), 'x')
  t.equal(appendList('a', 'x'), 'a, x')
  t.equal(appendList(['a', 'b'], 'x'), 'a, b, x')
  t.equal(appendList(7, 'x'), '7, x')
  t.equal(viaContains(undefined, 'gw-1'), false)
  t.equal(viaContains('1.1 edge, 1.1 gw-1', 'gw-1'), true)
  t.equal(viaContains(['1.1 edge', '1.1   gw-1 (comment)'], 'gw-1'), true)
  t.equal(viaContains('1.1 gw-12', 'gw-1'), false, 'the whole name')
  t.equal(viaContains('gw-1', 'gw-1'), false, 'the name is the second word')
  const a = {}
  const name = viaPseudonym(a, 'gw')
  t.match(name, /^gw-[\w-]{12}$/)
  t.equal(viaPseudonym(a, 'gw'), name, 'one per instance')
  t.not(viaPseudonym({}, 'gw'), name, 'another instance, another name')
})

t.test('closeConnectionAfter: HTTP/1 only', async (t) => {
  const reply = (major: number): { headers: Record<string, string>, reply: FastifyReply } => {
    const headers: Record<string, string> = {}
    return { headers, reply: { request: { raw: { httpVersionMajor: major } }, header: (k: string, v: string) => { headers[k] = v } } as unknown as FastifyReply }
  }
  const one = reply(1)
  closeConnectionAfter(one.reply)
  t.same(one.headers, { connection: 'close' })
  const two = reply(2)
  closeConnectionAfter(two.reply)
  t.same(two.headers, {})
})
