// Request bodies reach the upstream as the client sent them: any size, any method, any type.
import t from 'tap'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'

const MB = 1024 * 1024

/** An upstream that answers with what it received: method, framing headers, size and hash. */
async function recorder (t: { teardown: (fn: () => unknown) => void }): Promise<{ url: string }> {
  const u = await startUpstream('recorder', (req, res) => {
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (chunk: Buffer) => { bytes += chunk.length; hash.update(chunk) })
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({
        method: req.method,
        bytes,
        sha256: hash.digest('hex'),
        contentType: req.headers['content-type'] ?? null,
        contentLength: req.headers['content-length'] ?? null
      }))
    })
  })
  t.teardown(u.close)
  return { url: u.url }
}

function sha256 (data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** `size` bytes of a repeating pattern, made chunk by chunk (nothing held up front). */
function generated (size: number): Readable {
  const chunk = Buffer.alloc(64 * 1024, 'abcdefgh')
  let sent = 0
  return new Readable({
    read () {
      if (sent >= size) return this.push(null)
      const part = chunk.subarray(0, Math.min(chunk.length, size - sent))
      sent += part.length
      this.push(part)
    }
  })
}

function patternHash (size: number): string {
  const hash = createHash('sha256')
  const chunk = Buffer.alloc(64 * 1024, 'abcdefgh')
  for (let sent = 0; sent < size; sent += chunk.length) hash.update(chunk.subarray(0, Math.min(chunk.length, size - sent)))
  return hash.digest('hex')
}

t.test('20 MB uploads arrive whole by default, chunked and with Content-Length', async (t) => {
  const u = await recorder(t)
  const gw = await startGateway(t, { pools: { files: { targets: [u.url] } }, routes: [{ prefix: '/files', pool: 'files' }] })
  const size = 20 * MB
  const chunked = await gw.request('/files/up', { method: 'POST', body: generated(size), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(chunked.statusCode, 200)
  t.match(await chunked.body.json(), { bytes: size, sha256: patternHash(size), contentLength: null })

  const declared = await gw.request('/files/up', { method: 'PUT', body: generated(size), headers: { 'content-length': String(size) } })
  t.equal(declared.statusCode, 200)
  t.match(await declared.body.json(), { bytes: size, sha256: patternHash(size), contentLength: String(size) })
  t.same(gw.failures(), [])
})

t.test('every content type reaches the upstream byte for byte', async (t) => {
  const u = await recorder(t)
  const gw = await startGateway(t, { pools: { any: { targets: [u.url] } }, routes: [{ prefix: '/any', pool: 'any' }] })
  const cases: Array<[string, string | undefined, Buffer]> = [
    // Latin-1 bytes that are not UTF-8: a text parser would turn them into replacement characters.
    ['latin-1 text', 'text/plain; charset=latin1', Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0xff, 0xfe, 0x0a])],
    ['a form', 'application/x-www-form-urlencoded', Buffer.from('a=1&b=%C3%A9&c=+x+')],
    ['multipart', 'multipart/form-data; boundary=XyZ', Buffer.from('--XyZ\r\ncontent-disposition: form-data; name="f"; filename="a.bin"\r\n\r\n\x00\x01\x02\r\n--XyZ--\r\n', 'latin1')],
    ['invalid JSON', 'application/json', Buffer.from('{"a": 1,,, oops')],
    ['JSON with odd spacing', 'application/json; charset=utf-8', Buffer.from('{ "b" :\t2 }\n')],
    ['no type at all', undefined, Buffer.from([0, 1, 2, 3, 254, 255])],
    ['a type nobody registered', 'application/x-made-up', Buffer.from('raw')]
  ]
  for (const [name, type, body] of cases) {
    const res = await gw.request('/any/x', { method: 'POST', body, headers: type === undefined ? {} : { 'content-type': type } })
    t.equal(res.statusCode, 200, name)
    t.match(await res.body.json(), { bytes: body.length, sha256: sha256(body), contentType: type ?? null, contentLength: String(body.length) }, name)
  }
})

t.test('a body sent with GET reaches the upstream as sent', async (t) => {
  const u = await recorder(t)
  const gw = await startGateway(t, { pools: { search: { targets: [u.url] } }, routes: [{ prefix: '/es', pool: 'search' }] })
  const query = Buffer.from(JSON.stringify({ query: { match: { title: 'gateway' } } }))
  const res = await gw.request('/es/_search', { method: 'GET', body: query, headers: { 'content-type': 'application/json' } })
  t.equal(res.statusCode, 200)
  t.match(await res.body.json(), { method: 'GET', bytes: query.length, sha256: sha256(query), contentLength: String(query.length) })

  const streamed = await gw.request('/es/_search', { method: 'GET', body: generated(200 * 1024) })
  t.match(await streamed.body.json(), { method: 'GET', bytes: 200 * 1024, sha256: patternHash(200 * 1024) }, 'chunked too')

  const plain = await gw.request('/es/_search', { method: 'GET' })
  t.match(await plain.body.json(), { method: 'GET', bytes: 0, contentLength: null }, 'and a GET without one stays without')
})

/** Sends a request head with Expect: 100-continue; resolves with the first thing the gateway says. */
async function expectContinue (url: string, path: string, length: number): Promise<{ first: string, socket: net.Socket }> {
  const { port } = new URL(url)
  const socket = net.connect(Number(port), '127.0.0.1')
  socket.write(`POST ${path} HTTP/1.1\r\nHost: gw\r\nContent-Length: ${length}\r\nContent-Type: application/octet-stream\r\nExpect: 100-continue\r\n\r\n`)
  const first = await new Promise<string>((resolve, reject) => {
    socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1')))
    socket.once('error', reject)
  })
  return { first, socket }
}

t.test('with bodyLimit, a declared body over it gets 413 before any 100 Continue and no upstream connection', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { up: { targets: [u.url] } },
    routes: [{ prefix: '/up', pool: 'up', bodyLimit: 1000 }, { prefix: '/free', pool: 'up' }]
  })
  const over = await expectContinue(gw.url, '/up/file', 5000)
  t.teardown(() => over.socket.destroy())
  t.match(over.first, /^HTTP\/1\.1 413 /, 'the first answer is the 413, not 100 Continue')
  t.notMatch(over.first, /100 Continue/)
  t.match(over.first, /connection: close/i)
  t.equal(u.connections, 0, 'the upstream saw no connection')

  const fits = await expectContinue(gw.url, '/up/file', 10)
  t.teardown(() => fits.socket.destroy())
  t.match(fits.first, /^HTTP\/1\.1 100 Continue/, 'a body within the limit is invited')
  const answer = new Promise<string>((resolve) => {
    let text = ''
    fits.socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1')
      if (text.includes('"bytes":10')) resolve(text)
    })
  })
  fits.socket.write('0123456789')
  t.match(await answer, /^HTTP\/1\.1 200 /)

  const free = await expectContinue(gw.url, '/free/file', 5000)
  t.teardown(() => free.socket.destroy())
  t.match(free.first, /^HTTP\/1\.1 100 Continue/, 'a route without a limit invites any body')

  const appRoute = await expectContinue(gw.url, '/elsewhere', 5000)
  t.teardown(() => appRoute.socket.destroy())
  t.match(appRoute.first, /^HTTP\/1\.1 100 Continue/, 'paths outside the routes keep Node\'s behaviour')
})

t.test('timeouts.body: a client that stops mid-upload gets 408, and the target is not blamed', async (t) => {
  const u = await startUpstream('sink', (req, res) => { req.resume(); req.on('end', () => res.end('whole')) })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { up: { targets: [u.url], timeouts: { body: 300 } } }, routes: [{ prefix: '/up', pool: 'up' }] })
  const { port } = new URL(gw.url)
  const started = Date.now()
  const answer = await new Promise<string>((resolve, reject) => {
    // 200 KB declared, 100 KB sent: more than the replay buffer, so the body streams upstream.
    const socket = net.connect(Number(port), '127.0.0.1', () => {
      socket.write(`POST /up/file HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nContent-Length: ${200 * 1024}\r\n\r\n`)
      socket.write(Buffer.alloc(100 * 1024, 'x'))
    })
    let text = ''
    socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
    socket.on('close', () => resolve(text))
    socket.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 408 /)
  const problem = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { error: string, blame: string, hint: string }
  t.match(problem, { error: 'http_request_error', blame: 'client', hint: /sent no part of its body for 300 ms \(timeouts\.body\)/ })
  t.ok(Date.now() - started < 3000, 'answered soon after the client fell silent')
  t.match(gw.app.upstream.pool('up').targets()[0], { failures: 0, state: 'healthy' })
  t.equal(gw.failures().length, 1)
  t.equal(gw.failures()[0]!.level, 40, 'a client fault logs at warn')
})

t.test('timeouts.body: an upstream that stops taking the body gets connection_write_timeout', async (t) => {
  const held = new Set<import('node:http').IncomingMessage>()
  // Reads nothing and never answers: the body backs up into the gateway.
  const u = await startUpstream('deaf', (req) => { req.pause(); held.add(req) })
  t.teardown(async () => { for (const req of held) req.destroy(); await u.close() })
  const gw = await startGateway(t, { pools: { up: { targets: [u.url], timeouts: { body: 400 } } }, routes: [{ prefix: '/up', pool: 'up' }] })
  const size = 64 * MB
  // The answer comes while the client still has body to send: it gives up the rest after.
  const upload = new AbortController()
  const res = await gw.request('/up/file', { method: 'PUT', body: generated(size), signal: upload.signal, headers: { 'content-length': String(size), accept: 'application/json' } })
  t.equal(res.statusCode, 504)
  t.match(await res.body.json(), { error: 'connection_write_timeout', blame: 'upstream', phase: 'send' })
  upload.abort()
  t.equal(gw.failures().length, 1)
  t.match(gw.failures()[0], { level: 50, error: 'connection_write_timeout', msg: /stopped reading/ })
})
