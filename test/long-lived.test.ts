// Long-lived responses: Server-Sent Events, long polling, slow downloads. Their headers reach
// the client at once, and no wall clock cuts them while they keep sending.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { startGateway, waitFor } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'

/** Sends a GET with Node's client and resolves with the response as soon as its headers arrive. */
async function headersOf (url: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ res: http.IncomingMessage, ms: number }> {
  const started = performance.now()
  return await new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => resolve({ res, ms: performance.now() - started }))
    req.on('error', reject)
  })
}

async function bodyOf (res: http.IncomingMessage): Promise<string> {
  let text = ''
  for await (const chunk of res) text += String(chunk)
  return text
}

t.test('SSE: response headers reach the client before the first event', async (t) => {
  const timers = new Set<NodeJS.Timeout>()
  t.teardown(() => { for (const timer of timers) clearTimeout(timer) })
  const u = await startUpstream('events', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.flushHeaders()
    timers.add(setTimeout(() => res.end('data: first\n\n'), 1000))
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { events: { targets: [u.url] } }, routes: [{ prefix: '/events', pool: 'events' }] })

  const { res, ms } = await headersOf(`${gw.url}/events/stream`, { accept: 'text/event-stream' })
  const firstEventAt = performance.now()
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/event-stream')
  // The event comes 1 s after the headers; headers that waited for it would take >= 1000 ms.
  t.ok(ms < 500, `headers arrived after ${Math.round(ms)} ms, long before the first event at 1000 ms`)
  t.equal(await bodyOf(res), 'data: first\n\n')
  t.ok(performance.now() - firstEventAt > 300, 'the event itself came later, as the upstream sent it')
})

t.test('a small response still leaves in one piece with its headers', async (t) => {
  const u = await startUpstream('small', (_req, res) => res.end('hello'))
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { small: { targets: [u.url] } }, routes: [{ prefix: '/s', pool: 'small' }] })
  // Read off the socket: the first bytes to arrive hold the whole answer, head and body, sized
  // by Content-Length (a head written apart from its body would arrive as a chunk of its own).
  const first = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(new URL(gw.url).port), '127.0.0.1', () => socket.write('GET /s/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n'))
    socket.once('data', (chunk: Buffer) => { socket.destroy(); resolve(chunk.toString('latin1')) })
    socket.on('error', reject)
  })
  const [head = '', body] = first.split('\r\n\r\n')
  const [status, ...lines] = head.split('\r\n')
  const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
  t.equal(status, 'HTTP/1.1 200 OK')
  t.equal(headers['content-length'], '5')
  t.equal(headers['transfer-encoding'], undefined, 'sized, not chunked')
  t.equal(headers.via, '1.1 fastify-upstream')
  t.equal(body, 'hello', 'the body came with its headers')
})

t.test('a stream that keeps sending outlives any wall clock: timeouts.total is off by default', async (t) => {
  const intervals = new Set<NodeJS.Timeout>()
  t.teardown(() => { for (const interval of intervals) clearInterval(interval) })
  // 3 s of events every 200 ms under a 500 ms idle timer: only a wall clock could cut it.
  const u = await startUpstream('ticker', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    let n = 0
    const interval = setInterval(() => {
      n++
      if (n > 15) {
        clearInterval(interval)
        res.end('data: end\n\n')
        return
      }
      res.write(`data: ${n}\n\n`)
    }, 200)
    intervals.add(interval)
  })
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { ticker: { targets: [u.url], timeouts: { body: 500 } } },
    routes: [{ prefix: '/t', pool: 'ticker' }]
  })
  const started = performance.now()
  const { res } = await headersOf(`${gw.url}/t/stream`)
  const body = await bodyOf(res)
  t.ok(performance.now() - started >= 2900, 'the stream lasted its 3 s')
  t.match(body, /data: 15\n\ndata: end\n\n$/, 'every event arrived, to the end')
  t.same(gw.failures(), [], 'nothing was logged as a failure')
})

t.test('a stream that stalls is cut by timeouts.body and logged once, at error', async (t) => {
  const u = await startUpstream('stall', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: 1\n\n')
  })
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { stall: { targets: [u.url], timeouts: { body: 300 } } },
    routes: [{ prefix: '/st', pool: 'stall' }]
  })
  const { res } = await headersOf(`${gw.url}/st/x`)
  t.equal(res.statusCode, 200)
  const ended = await new Promise<string>((resolve) => {
    res.on('data', () => {})
    res.on('error', () => resolve('error'))
    res.on('aborted', () => resolve('aborted'))
    res.on('end', () => resolve('end'))
  })
  t.not(ended, 'end', 'the client sees a cut, not a silently short stream')
  await waitFor(() => gw.failures().length === 1)
  const [record] = gw.failures()
  t.equal(record!.error, 'connection_read_timeout')
  t.equal(record!.status, 200)
  t.equal(record!.level, 50, 'an upstream failure logs at error even though the client had a 200')
})

t.test('timeouts.total, when set, still bounds the exchange and its cut logs at error', async (t) => {
  const intervals = new Set<NodeJS.Timeout>()
  t.teardown(() => { for (const interval of intervals) clearInterval(interval) })
  const u = await startUpstream('long', (_req, res) => {
    res.writeHead(200)
    intervals.add(setInterval(() => res.write('.'), 50))
  })
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { long: { targets: [u.url], timeouts: { total: 400 } } },
    routes: [{ prefix: '/l', pool: 'long' }]
  })
  const { res } = await headersOf(`${gw.url}/l/x`)
  await new Promise<void>((resolve) => {
    res.on('data', () => {})
    res.on('error', () => resolve())
    res.on('close', () => resolve())
  })
  await waitFor(() => gw.failures().length === 1)
  const [record] = gw.failures()
  t.equal(record!.error, 'http_response_timeout')
  t.equal(record!.level, 50)
})
