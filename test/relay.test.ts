// The relay against answers an upstream may legally (or not) send, on raw sockets for exact
// bytes: Trailer fields, 1xx answers, bodiless statuses with framing fields, transfer codings,
// upgrade requests with bodies, framing across read boundaries, and throws in relay work. Each
// ends in a well-formed answer or a clean cut, one log record where something went wrong, no
// target blamed for the gateway's own limits, and the process alive.
import t from 'tap'
import http2 from 'node:http2'
import type net from 'node:net'
import type { FastifyServerOptions } from 'fastify'
import { startGateway, type Gateway } from './helpers/gateway.js'
import { exchangeRaw, hasAnswers, parseResponses, startScripted, type Scripted } from './helpers/http1.js'
import { ourProxyStatus } from './helpers/proxy-status.js'
import type { UpstreamOptions } from '../lib/index.js'

type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

// Nothing here may end the process: an exception that escaped would be caught here and fail
// the tests that check, instead of ending the file.
const escaped: unknown[] = []
process.on('uncaughtException', (err) => { escaped.push(err) })

async function gateway (t: Tap, upstream: Scripted, route: Partial<UpstreamOptions['routes'][number]> = {}, fastify: FastifyServerOptions = {}, setup?: Parameters<typeof startGateway>[3]): Promise<Gateway> {
  return await startGateway(t, {
    pools: { p: { targets: [upstream.url] } },
    routes: [{ prefix: '/', pool: 'p', ...route }],
    errors: { expose: 'full' }
  }, fastify, setup)
}

function get (path = '/x', extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: gw\r\n${extra}\r\n`
}

/** The one target's counters: failures counted against it, and its state. */
function target (gw: Gateway): { failures: number, state: string } {
  const [only] = gw.app.upstream.pools()[0]!.targets
  return { failures: only!.failures, state: only!.state }
}

t.test('an upstream Trailer field on a Content-Length answer whose body comes late: relayed whole, without the Trailer field', async (t) => {
  const up = await startScripted(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTrailer: X-Checksum\r\n\r\n')
    setTimeout(() => socket.write('hello'), 100)
  })
  const gw = await gateway(t, up)
  for (const version of ['1.1', '1.0']) {
    const { bytes, closed } = await exchangeRaw(gw.url, [`GET /x HTTP/${version}\r\nHost: gw\r\n\r\n`], hasAnswers(1))
    const [answer] = parseResponses(bytes, ['GET'], closed)
    t.equal(answer!.status, 200, `HTTP/${version}: 200`)
    t.equal(answer!.headers['content-length'], '5', `HTTP/${version}: the upstream's Content-Length`)
    t.equal(answer!.headers.trailer, undefined, `HTTP/${version}: no Trailer field on an answer that cannot carry trailers`)
    t.equal(answer!.body, 'hello')
  }
  t.same(gw.failures(), [], 'no failure record')
  t.same(escaped, [], 'nothing escaped')
})

t.test('a chunked answer with trailers: dropped for a client that did not ask, forwarded to one that sent TE: trailers, whole for HTTP/1.0', async (t) => {
  const up = await startScripted(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n')
  })
  const gw = await gateway(t, up)

  const plain = await exchangeRaw(gw.url, [get()], hasAnswers(1))
  const [dropped] = parseResponses(plain.bytes, ['GET'], plain.closed)
  t.equal(dropped!.status, 200)
  t.equal(dropped!.framing, 'chunked', 'chunked, as the upstream sent it')
  t.equal(dropped!.body, 'hello')
  t.equal(dropped!.headers.trailer, undefined, 'no Trailer field')
  t.same(dropped!.trailers, {}, 'no trailers')

  const asked = await exchangeRaw(gw.url, [get('/x', 'TE: trailers\r\n')], hasAnswers(1))
  const [forwarded] = parseResponses(asked.bytes, ['GET'], asked.closed)
  t.equal(forwarded!.body, 'hello')
  t.equal(forwarded!.headers.trailer, 'X-Checksum', 'the Trailer field, as the upstream declared it')
  t.same(forwarded!.trailers, { 'x-checksum': 'abc' }, 'the trailers')

  const old = await exchangeRaw(gw.url, ['GET /x HTTP/1.0\r\n\r\n'], () => false)
  const [whole] = parseResponses(old.bytes, ['GET'], old.closed)
  t.equal(whole!.status, 200)
  t.equal(whole!.body, 'hello', 'an HTTP/1.0 client gets the body, framed by the connection')
  t.same(gw.failures(), [], 'no failure record')
})

t.test('an HTTP/2 client gets the upstream\'s trailers, after a body or none', async (t) => {
  const up = await startScripted(t, (socket, head) => {
    socket.write(head.startsWith('GET /empty')
      ? 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGrpc-Status: 0\r\nX-Checksum: abc\r\n\r\n'
      : 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nGrpc-Status: 0\r\nX-Checksum: abc\r\n\r\n')
  })
  const gw = await gateway(t, up, {}, { http2: true } as FastifyServerOptions)
  const client = http2.connect(gw.url)
  t.teardown(() => { client.close() })
  const ask = async (path: string): Promise<{ status: number, body: string, trailers: http2.IncomingHttpHeaders }> => await new Promise((resolve, reject) => {
    const stream = client.request({ ':path': path })
    let status = 0
    let body = ''
    let trailers: http2.IncomingHttpHeaders = {}
    stream.on('response', (headers) => { status = Number(headers[':status']) })
    stream.on('trailers', (headers) => { trailers = headers })
    stream.on('data', (chunk: Buffer) => { body += chunk.toString() })
    stream.on('end', () => resolve({ status, body, trailers }))
    stream.on('error', reject)
  })
  for (const [path, sent] of [['/x', 'ok'], ['/empty', '']]) {
    const { status, body, trailers } = await ask(path)
    t.equal(status, 200)
    t.equal(body, sent)
    t.equal(trailers['grpc-status'], '0', `${path}: the trailers`)
    t.equal(trailers['x-checksum'], 'abc')
  }
})

t.test('304 with Content-Length: a well-formed 304, no failure, the target not blamed, and the next pipelined request gets its answer', async (t) => {
  const up = await startScripted(t, (socket, _head, index) => {
    socket.write(index % 2 === 0
      ? 'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "v1"\r\n\r\n'
      : 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nsecond')
  })
  const gw = await gateway(t, up)
  const { bytes, closed } = await exchangeRaw(gw.url, [get('/a', 'If-None-Match: "v1"\r\n'), get('/b')], hasAnswers(2))
  const answers = parseResponses(bytes, ['GET', 'GET'], closed)
  t.same(answers.map((a) => a.status), [304, 200], 'both answered, in order')
  t.equal(answers[0]!.headers['content-length'], '5', 'the 304 keeps the representation\'s length (RFC 9110 §8.6)')
  t.equal(answers[0]!.headers.etag, '"v1"')
  t.equal(answers[0]!.body, '')
  t.equal(answers[1]!.body, 'second')
  t.notOk(closed, 'the client\'s connection stays open')
  t.same(gw.failures(), [], 'no failure record')
  t.same(target(gw), { failures: 0, state: 'healthy' }, 'the target is not blamed')
})

t.test('204 with Content-Length: no Content-Length and no body reach the client', async (t) => {
  const up = await startScripted(t, (socket) => { socket.write('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n') })
  const gw = await gateway(t, up)
  const { bytes, closed } = await exchangeRaw(gw.url, [get(), get()], hasAnswers(2))
  const answers = parseResponses(bytes, ['GET', 'GET'], closed)
  t.same(answers.map((a) => a.status), [204, 204])
  t.equal(answers[0]!.headers['content-length'], undefined, 'no Content-Length on a 204 (RFC 9110 §8.6)')
  t.same(gw.failures(), [], 'no failure record')
  t.equal(target(gw).failures, 0, 'the target is not blamed')
})

t.test('HEAD: the upstream\'s Content-Length, no body, and the connection goes on', async (t) => {
  const up = await startScripted(t, (socket) => { socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n') })
  const gw = await gateway(t, up)
  const { bytes, closed } = await exchangeRaw(gw.url, ['HEAD /x HTTP/1.1\r\nHost: gw\r\n\r\n'], hasAnswers(1, ['HEAD']))
  t.notOk(closed, 'the connection stays open')
  const answers = parseResponses(bytes, ['HEAD'], closed)
  t.equal(answers[0]!.status, 200)
  t.equal(answers[0]!.headers['content-length'], '1234')
  t.equal(answers[0]!.body, '')
})

t.test('an unsolicited 100 Continue: sent to the target once, answered 502 naming undici\'s refusal, the target not blamed', async (t) => {
  const up = await startScripted(t, (socket) => { socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok') })
  const gw = await gateway(t, up)
  const res = await gw.request('/x')
  const text = await res.body.text()
  t.equal(res.statusCode, 502)
  t.same(ourProxyStatus(res.headers['proxy-status']).params.error, 'proxy_internal_error')
  t.match(text, /interim 100 Continue the gateway did not ask for/)
  t.equal(up.heads.length, 1, 'the request reached the target once: not retried')
  const [record] = gw.failures()
  t.equal(gw.failures().length, 1, 'one failure record')
  t.equal(record!.cause, 'FST_UPSTREAM_UNSOLICITED_100')
  t.equal(record!.blame, 'gateway', 'the gateway\'s limit, not the target\'s fault')
  t.same(target(gw), { failures: 0, state: 'healthy' }, 'not counted toward ejection')
})

t.test('103 Early Hints and 102 Processing reach the client ahead of the answer; on a pipelined connection they never land inside an earlier answer', async (t) => {
  const up = await startScripted(t, (socket, head) => {
    if (head.startsWith('GET /slow')) {
      // The first answer's body takes a while: the second request's hints come meanwhile.
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello')
      setTimeout(() => socket.write('world'), 300)
      return
    }
    socket.write('HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload, </b.js>; rel=preload\r\n\r\n')
    setTimeout(() => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 50)
  })
  // Two targets' worth of connections to one upstream, so the pipelined requests go out at once.
  const gw = await gateway(t, up)

  const alone = await exchangeRaw(gw.url, [get('/hints')], hasAnswers(1))
  const one = parseResponses(alone.bytes, ['GET'], alone.closed)
  t.same(one.map((a) => a.status), [102, 103, 200], 'the interim answers first, then the final one')
  t.equal(one[1]!.headers.link, '</a.css>; rel=preload, </b.js>; rel=preload', 'each link of the hint')
  t.equal(one[2]!.body, 'ok')

  const piped = await exchangeRaw(gw.url, [get('/slow'), get('/hints')], hasAnswers(2))
  const answers = parseResponses(piped.bytes, ['GET', 'GET'], piped.closed)
  t.same(answers.filter((a) => a.status >= 200).map((a) => [a.status, a.body]), [[200, 'helloworld'], [200, 'ok']], 'both answers whole, in order')
  const first = answers.findIndex((a) => a.status >= 200)
  t.ok(answers.slice(0, first).every((a) => a.status < 200) && answers.slice(first + 1).every((a) => a.status >= 200 || a.status === 103 || a.status === 102), 'interim answers only between messages')
  t.same(gw.failures(), [], 'no failure record')

  const old = await exchangeRaw(gw.url, ['GET /hints HTTP/1.0\r\n\r\n'], () => false)
  t.same(parseResponses(old.bytes, ['GET'], old.closed).map((a) => a.status), [200], 'an HTTP/1.0 client gets no interim answer')
})

t.test('Transfer-Encoding gzip, chunked: 502 naming the coding, not retried, the target not blamed', async (t) => {
  const up = await startScripted(t, (socket) => { socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n') })
  const gw = await gateway(t, up)
  const res = await gw.request('/x')
  const text = await res.body.text()
  t.equal(res.statusCode, 502)
  t.match(text, /Transfer-Encoding "gzip, chunked"/)
  t.notMatch(text, /abc/, 'none of the coded bytes')
  t.equal(up.heads.length, 1, 'not retried')
  t.equal(gw.failures().length, 1, 'one failure record')
  t.equal(gw.failures()[0]!.cause, 'FST_UPSTREAM_TRANSFER_CODING')
  t.equal(gw.failures()[0]!.phase, 'headers')
  t.same(target(gw), { failures: 0, state: 'healthy' })
})

t.test('Upgrade: h2c with a body on a websocket route (curl --http2 -d): the body reaches the upstream; a chunked one is refused with 411', async (t) => {
  const up = await startScripted(t, (socket) => { socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok') })
  const gw = await gateway(t, up, { websocket: true })
  const upgrade = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Type: text/plain\r\n'
  const sized = await exchangeRaw(gw.url, [`POST /x HTTP/1.1\r\nHost: gw\r\n${upgrade}Content-Length: 5\r\n\r\nhel`, 'lo'], hasAnswers(1))
  t.equal(parseResponses(sized.bytes, ['POST'], sized.closed)[0]!.status, 200)
  t.match(up.heads[0], /\r\ncontent-length: 5\r\n/i, 'the upstream is told the body\'s length')
  t.ok(up.heads[0]!.endsWith('\r\n\r\nhello'), 'and gets the body, from the head Node read and the socket after it')
  t.notMatch(up.heads[0], /upgrade|http2-settings/i, 'the upgrade stays on the client\'s hop')

  const chunked = await exchangeRaw(gw.url, [`POST /x HTTP/1.1\r\nHost: gw\r\n${upgrade}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`], hasAnswers(1))
  const [refused] = parseResponses(chunked.bytes, ['POST'], chunked.closed)
  t.equal(refused!.status, 411)
  t.equal(up.heads.length, 1, 'nothing more reached the upstream')
})

t.test('framing follows the upstream: its Content-Length however the body arrives, chunked stays chunked', async (t) => {
  const up = await startScripted(t, (socket, head) => {
    if (head.startsWith('GET /split')) {
      // Without a Content-Type, in three reads.
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc')
      setTimeout(() => socket.write('def'), 30)
      setTimeout(() => socket.write('ghi'), 60)
    } else {
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n')
    }
  })
  const gw = await gateway(t, up)
  const split = await exchangeRaw(gw.url, [get('/split')], hasAnswers(1))
  const [sized] = parseResponses(split.bytes, ['GET'], split.closed)
  t.equal(sized!.framing, 'length')
  t.equal(sized!.headers['content-length'], '9')
  t.equal(sized!.headers['content-type'], undefined, 'no Content-Type invented')
  t.equal(sized!.body, 'abcdefghi')
  const whole = await exchangeRaw(gw.url, [get('/whole')], hasAnswers(1))
  const [chunked] = parseResponses(whole.bytes, ['GET'], whole.closed)
  t.equal(chunked!.framing, 'chunked', 'a chunked answer that came in one read stays chunked')
  t.equal(chunked!.body, 'abc')
})

t.test('a throw in relay work ends that one exchange as the gateway\'s failure, never the process', async (t) => {
  const up = await startScripted(t, (socket, head) => {
    if (head.startsWith('GET /empty')) {
      socket.write('HTTP/1.1 204 No Content\r\n\r\n')
    } else if (head.startsWith('GET /late')) {
      // Headers now, the body later: the relay flushes the headers on their own first.
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n')
      setTimeout(() => socket.write('late'), 200)
    } else {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel')
      setTimeout(() => socket.write('lo'), 50)
    }
  })
  const gw = await gateway(t, up, {}, {}, (app) => {
    // Each request names the step that throws: Node refusing the headers at once (writeHead),
    // as a streamed answer starts (setHeader, from the microtask), or as its headers flush.
    app.addHook('onRequest', async (request, reply) => {
      const step = request.headers['x-throw']
      const boom = (): never => { throw Object.assign(new Error(`injected: ${String(step)}`), { code: 'ERR_INJECTED' }) }
      if (step === 'writeHead') reply.raw.writeHead = boom
      if (step === 'setHeader') reply.raw.setHeader = boom
      if (step === 'flushHeaders') reply.raw.flushHeaders = boom
    })
  })
  const before = gw.failures().length
  const headers = await exchangeRaw(gw.url, [get('/empty', 'X-Throw: writeHead\r\n')], () => false, 2000)
  t.ok(headers.closed, 'writeHead: the connection is cut (not even the failure answer could be written)')
  t.equal(headers.bytes, '', 'writeHead: nothing half-written')

  const stream = await exchangeRaw(gw.url, [get('/stream', 'X-Throw: setHeader\r\n')], hasAnswers(1))
  const [answered] = parseResponses(stream.bytes, ['GET'], stream.closed)
  t.equal(answered!.status, 500, 'setHeader: nothing had gone out, so the gateway answers')
  t.same(ourProxyStatus(answered!.headers['proxy-status']).params.error, 'proxy_internal_error')

  const flush = await exchangeRaw(gw.url, [get('/late', 'X-Throw: flushHeaders\r\n')], () => false, 3000)
  t.ok(flush.closed, 'flushHeaders: the client\'s connection is cut')

  const records = gw.failures().slice(before)
  t.same(records.map((r) => [r.error, r.cause]), [
    ['proxy_internal_error', 'FST_UPSTREAM_RELAY_FAILED'],
    ['proxy_internal_error', 'FST_UPSTREAM_RELAY_FAILED'],
    ['proxy_internal_error', 'FST_UPSTREAM_RELAY_FAILED']
  ], 'one record for each, the gateway\'s own failure')
  t.equal(target(gw).failures, 0, 'none counted against the target')
  const after = await gw.request('/stream')
  t.equal(after.statusCode, 200, 'the gateway goes on serving')
  t.equal(await after.body.text(), 'hello')
  t.same(escaped, [], 'nothing escaped')
})

// For the types of a raw socket handler above.
export type { net }
