// What the client gets back for the answers an upstream gives: status, headers and body as
// sent (framing aside), and how the app's onSend hooks see them.
import t from 'tap'
import net from 'node:net'
import http2 from 'node:http2'
import type { FastifyServerOptions } from 'fastify'
import type { Readable } from 'node:stream'
import { startGateway } from './helpers/gateway.js'
import { echo, startUpstream, startTcp } from './helpers/servers.js'
import { ourProxyStatus } from './helpers/proxy-status.js'

t.test('HEAD keeps the Content-Length of the GET; 204 and 304 pass without a body or a made-up length', async (t) => {
  const u = await startUpstream('u', (req, res) => {
    if (req.url === '/head') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1234' })
      res.end()
    } else if (req.url === '/204') {
      res.writeHead(204, { 'x-done': 'yes' })
      res.end()
    } else {
      res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=60' })
      res.end()
    }
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/a', pool: 'p' }] })
  const head = await gw.request('/a/head', { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-length'], '1234')
  t.equal(head.headers['content-type'], 'text/plain')
  t.equal((await head.body.arrayBuffer()).byteLength, 0)
  const noContent = await gw.request('/a/204')
  t.equal(noContent.statusCode, 204)
  t.equal(noContent.headers['x-done'], 'yes')
  t.notOk('content-length' in noContent.headers)
  t.notOk('content-type' in noContent.headers)
  await noContent.body.dump()
  const notModified = await gw.request('/a/304', { headers: { 'if-none-match': '"v1"' } })
  t.equal(notModified.statusCode, 304)
  t.equal(notModified.headers.etag, '"v1"')
  t.notOk('content-type' in notModified.headers)
  await notModified.body.dump()
})

t.test('an answer without Content-Type gets none; repeated fields stay separate; Connection-named fields are dropped', async (t) => {
  const u = await startTcp((socket) => {
    socket.once('data', () => {
      socket.end([
        'HTTP/1.1 200 OK', 'Content-Length: 5', 'Set-Cookie: a=1', 'Set-Cookie: b=2', 'X-Multi: one', 'X-Multi: two',
        'Connection: close, X-Hop', 'X-Hop: secret', 'Keep-Alive: timeout=5', '', 'hello'
      ].join('\r\n'))
    })
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/a', pool: 'p' }] })
  const res = await gw.request('/a/x')
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), 'hello')
  t.notOk('content-type' in res.headers, 'no Content-Type is made up')
  t.same(res.headers['set-cookie'], ['a=1', 'b=2'])
  t.same(res.headers['x-multi'], ['one', 'two'])
  t.notOk('x-hop' in res.headers, 'a field the upstream\'s Connection names stays on that hop')
  t.not(res.headers['keep-alive'], 'timeout=5', 'nor does its Keep-Alive (the gateway\'s own connection has its own)')
  t.match(ourProxyStatus(res.headers['proxy-status']), { proxy: 'fastify-upstream', params: { 'received-status': 200 } })
})

t.test('onSend hooks see a small answer as a Buffer and a long one as a stream; both arrive whole', async (t) => {
  const big = Buffer.alloc(4 * 1024 * 1024, 'x')
  const u = await startUpstream('u', (req, res) => {
    if (req.url === '/small') {
      res.setHeader('content-type', 'application/json')
      res.end('{"ok":true}')
      return
    }
    // Sent in two parts, apart: the second cannot have come with the headers.
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(big.length) })
    res.write(big.subarray(0, 1024))
    setTimeout(() => res.end(big.subarray(1024)), 50)
  })
  t.teardown(u.close)
  const seen: string[] = []
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/a', pool: 'p' }] }, {}, (app) => {
    app.addHook('onSend', async (_request, _reply, payload) => {
      seen.push(Buffer.isBuffer(payload) ? 'buffer' : typeof (payload as Readable)?.pipe === 'function' ? 'stream' : typeof payload)
      return payload
    })
  })
  const small = await gw.request('/a/small')
  t.same(await small.body.json(), { ok: true })
  t.equal(small.headers['content-length'], '11')
  const long = await gw.request('/a/long')
  t.equal(Buffer.from(await long.body.arrayBuffer()).equals(big), true, 'every byte of 4 MB')
  t.same(seen, ['buffer', 'stream'])
})

t.test('a small answer leaves in one write: headers and body in the first chunk the client reads', async (t) => {
  const u = await startUpstream('u', (_req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end('{"ok":true}')
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/a', pool: 'p' }] })
  const first = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(new URL(gw.url).port), '127.0.0.1', () => {
      socket.write('GET /a/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n')
    })
    socket.once('data', (chunk) => { resolve(chunk.toString('latin1')); socket.destroy() })
    socket.once('error', reject)
  })
  t.match(first, /^HTTP\/1\.1 200 OK\r\n/)
  t.ok(first.endsWith('\r\n\r\n{"ok":true}'), 'the body is in the same chunk as the headers')
})

t.test('HTTP/2 clients: their pseudo-header fields stay on their hop; answers, bodies both ways and failures work', async (t) => {
  const big = Buffer.alloc(2 * 1024 * 1024, 'z')
  const u = await startUpstream('u', (req, res) => {
    if (req.url === '/long') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      res.write(big.subarray(0, 1024))
      setTimeout(() => res.end(big.subarray(1024)), 30)
      return
    }
    echo('u')(req, res)
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] }, down: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/a', pool: 'p' }, { prefix: '/down', pool: 'down' }] }, { http2: true } as FastifyServerOptions)
  const client = http2.connect(gw.url)
  t.teardown(() => { client.close() })
  const ask = async (headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ headers: http2.IncomingHttpHeaders, body: Buffer }> => await new Promise((resolve, reject) => {
    const stream = client.request(headers)
    const chunks: Buffer[] = []
    let answer: http2.IncomingHttpHeaders = {}
    stream.on('response', (h) => { answer = h })
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.on('end', () => { resolve({ headers: answer, body: Buffer.concat(chunks) }) })
    stream.on('error', reject)
    stream.end(body)
  })
  const get = await ask({ ':path': '/a/x?y=1', accept: 'application/json' })
  t.equal(get.headers[':status'], 200)
  const seen = JSON.parse(get.body.toString()) as { url: string, headers: Record<string, string> }
  t.equal(seen.url, '/x?y=1')
  t.notOk(Object.keys(seen.headers).some((name) => name.startsWith(':')), 'no pseudo-header field reached the upstream')
  t.equal(seen.headers['x-forwarded-proto'], 'http')
  const upload = Buffer.alloc(256 * 1024, 'u')
  const post = await ask({ ':method': 'POST', ':path': '/a/up', 'content-type': 'application/octet-stream' }, upload)
  t.equal((JSON.parse(post.body.toString()) as { bytes: number }).bytes, upload.length, 'the upload arrived whole')
  const long = await ask({ ':path': '/a/long' })
  t.ok(long.body.equals(big), 'a streamed answer arrives whole')
  const failed = await ask({ ':path': '/down/x', accept: 'application/json' })
  t.equal(failed.headers[':status'], 502)
  t.match(ourProxyStatus(failed.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'connection_refused' } })
})
