// app.upstream.probe and <status.path>/probe: one request to one target outside the balancer,
// each phase timed, the failure classified as a proxied one would be.
import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { startUpstream, startHttpsUpstream, selfSignedCert, deadTarget, opensslMissing } from './helpers/servers.js'
import type { ProbeResult } from '../lib/observe/probe.js'

t.test('a healthy target answers with every phase timed, at its health path', async (t) => {
  let path = ''
  const u = await startUpstream('u', (req, res) => { path = req.url ?? ''; res.end('ok') })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { api: { targets: [u.url], health: { path: '/healthz', interval: 60_000 } } }, routes: [{ prefix: '/api', pool: 'api' }] })
  const result = await gw.app.upstream.probe('api', u.url)
  t.match(result, { pool: 'api', target: u.url, url: `${u.url}/healthz`, ok: true, status: 200, error: null })
  t.equal(path, '/healthz')
  t.type(result.ms.connect, 'number')
  t.type(result.ms.firstByte, 'number')
  t.equal(result.ms.tls, null, 'no TLS over http')
  await (await gw.request('/api/x')).body.text()
  // At least one: the first health check may open a connection of its own at the same moment.
  const connections = gw.app.upstream.pool('api').targets()[0]!.connections
  t.ok(connections.count >= 1, 'a proxied connection is timed')
  t.equal(connections.tlsMs, null, 'with no TLS over http')
  t.ok(result.ms.connect! <= result.ms.firstByte! && result.ms.firstByte! <= result.ms.total)

  const res = await gw.request(`/_upstream/probe?pool=api&target=${encodeURIComponent(u.url)}`, { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 200)
  t.match(await res.body.json(), { ok: true, status: 200 })
  const html = await (await gw.request(`/_upstream/probe?pool=api&target=${encodeURIComponent(u.url)}`, { headers: { accept: 'text/html' } })).body.text()
  t.match(html, /first byte/)
  const text = await gw.request(`/_upstream/probe?pool=api&target=${encodeURIComponent(u.url)}`)
  t.equal(text.headers['content-type'], 'text/plain; charset=utf-8', 'text for a client that asks for nothing')
  t.match(await text.body.text(), new RegExp(`^Probe of ${u.url.replace(/\./g, '\\.')} \\(pool api\\) at .*\\nGET ${u.url.replace(/\./g, '\\.')}/healthz\\nOutcome: 200\\n`))
  const refused = await gw.request('/_upstream/probe?pool=api')
  t.equal(refused.statusCode, 400)
  t.equal(await refused.body.text(), 'Give ?pool= (one of api) and ?target= (a target URL of that pool).\n')
})

t.test('a refused target reports connection_refused in the connect phase', async (t) => {
  const dead = await deadTarget(t)
  const gw = await startGateway(t, { pools: { api: { targets: [dead] } }, routes: [{ prefix: '/api', pool: 'api' }] })
  const result = await gw.app.upstream.probe('api', dead)
  t.match(result, { ok: false, status: null, error: 'connection_refused', phase: 'connect', cause: 'ECONNREFUSED' })
  t.equal(result.ms.connect, null)
  t.equal(result.ms.firstByte, null)
})

t.test('a TLS target has its handshake timed; a self-signed certificate is a certificate error unless trusted', { skip: opensslMissing ?? false }, async (t) => {
  const cert = await selfSignedCert()
  if (cert === null) throw new Error('openssl is installed but could not make a certificate')
  const u = await startHttpsUpstream(cert, (_req, res) => { res.end('secure') })
  t.teardown(u.close)
  const target = u.url
  const trusted = await startGateway(t, { pools: { api: { targets: [target], tls: { ca: cert.cert } } }, routes: [{ prefix: '/api', pool: 'api' }] })
  const ok: ProbeResult = await trusted.app.upstream.probe('api', target)
  t.match(ok, { ok: true, status: 200 })
  t.type(ok.ms.tls, 'number')
  t.ok(ok.ms.connect! <= ok.ms.tls! && ok.ms.tls! <= ok.ms.firstByte!)

  // Proxied traffic times its connections too: TCP and the TLS handshake, for the status page
  // and the diagnosis (a threshold of 1 ms makes any real handshake a finding).
  const timed = await startGateway(t, { pools: { api: { targets: [target], tls: { ca: cert.cert } } }, routes: [{ prefix: '/api', pool: 'api' }], status: { expose: 'full', diagnosis: { tlsLatency: 1 } } })
  t.equal((await (await timed.request('/api/x')).body.text()), 'secure')
  const connections = timed.app.upstream.pool('api').targets()[0]!.connections
  t.equal(connections.count, 1)
  t.type(connections.tcpMs, 'number')
  t.type(connections.tlsMs, 'number')
  const report = await (await timed.request('/_upstream', { headers: { accept: 'application/json' } })).body.json() as { diagnosis: Array<{ title: string, target?: string }> }
  t.equal(report.diagnosis.some((f) => /^TLS handshakes with 127\.0\.0\.1:\d+ take/.test(f.title)), connections.tlsMs! > 1, 'a handshake over the threshold is a finding')
  t.match(await (await timed.request('/_upstream', { headers: { accept: 'text/html' } })).body.text(), /connections 1, connect [\d.]+ ms, TLS [\d.]+ ms/)

  const strict = await startGateway(t, { pools: { api: { targets: [target] } }, routes: [{ prefix: '/api', pool: 'api' }] })
  const bad = await strict.app.upstream.probe('api', target)
  t.match(bad, { ok: false, error: 'tls_certificate_error', cause: 'DEPTH_ZERO_SELF_SIGNED_CERT' })
})

t.test('an unknown pool or target is refused with the names that exist', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }] })
  await t.rejects(gw.app.upstream.probe('api', 'http://127.0.0.1:1'), /has no target/)
  await t.rejects(gw.app.upstream.probe('nope', u.url), /no pool named "nope"/)
  const res = await gw.request('/_upstream/probe?pool=nope&target=x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 400)
  t.match(await res.body.json(), { error: /one of api/ })
})
