import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { opensslMissing, selfSignedCert, startHttpsUpstream, startUpstream } from './helpers/servers.js'
import { startH2Upstream } from './helpers/h2.js'
import { speaksFrom } from '../lib/pool/sniff.js'

interface Problem { error: string, hint: string }

async function problemOf (gw: Awaited<ReturnType<typeof startGateway>>): Promise<Problem> {
  const res = await gw.request('/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 502)
  return await res.body.json() as Problem
}

t.test('an http:// target on a TLS port: the hint says it speaks HTTPS', { skip: opensslMissing ?? false }, async (t) => {
  const cert = (await selfSignedCert())!
  const up = await startHttpsUpstream(cert, (_req, res) => { res.end('tls') })
  t.teardown(up.close)
  const plainUrl = up.url.replace('https:', 'http:')
  const gw = await startGateway(t, { pools: { api: { targets: [plainUrl], retry: { retries: 0 } } }, routes: [{ prefix: '/', pool: 'api' }] })
  const problem = await problemOf(gw)
  t.equal(problem.hint, `127.0.0.1:${up.port} answered with TLS: it speaks HTTPS on that port; use an https:// URL for the target in pool "api".`)
  t.equal(gw.failures().length, 1, 'one log record')
})

t.test('an https:// target on a plain HTTP port: the hint says it speaks plain HTTP', async (t) => {
  const up = await startUpstream('u')
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { api: { targets: [up.url.replace('http:', 'https:')], retry: { retries: 0 } } }, routes: [{ prefix: '/', pool: 'api' }] })
  const problem = await problemOf(gw)
  t.equal(problem.error, 'tls_protocol_error')
  t.equal(problem.hint, `127.0.0.1:${up.port} answered a TLS ClientHello with an HTTP/1.x status line: it speaks plain HTTP; use an http:// URL for the target in pool "api".`)
})

t.test('an http1 pool in front of an HTTP/2-only (h2c) server: the hint says set protocol h2c', async (t) => {
  const up = await startH2Upstream()
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url], retry: { retries: 0 } } }, routes: [{ prefix: '/', pool: 'rpc' }] })
  const problem = await problemOf(gw)
  t.equal(problem.hint, `127.0.0.1:${up.port} answered with an HTTP/2 frame: it speaks HTTP/2 only; set protocol: 'h2c' on pool "rpc".`)
  // With the protocol the hint names, it works.
  const fixed = await startGateway(t, { pools: { rpc: { targets: [up.url], protocol: 'h2c' } }, routes: [{ prefix: '/', pool: 'rpc' }] })
  t.equal((await fixed.request('/x')).statusCode, 200)
})

t.test('first bytes read as what they are', async (t) => {
  t.equal(speaksFrom(Buffer.from('HTTP/1.1 400 Bad Request\r\n')), 'http1')
  t.equal(speaksFrom(Buffer.from([21, 3, 1, 0, 2, 2, 70])), 'tls')
  t.equal(speaksFrom(Buffer.from([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3])), 'h2')
  t.equal(speaksFrom(Buffer.from('SSH-2.0-OpenSSH')), null)
  t.equal(speaksFrom(Buffer.alloc(0)), null)
})
