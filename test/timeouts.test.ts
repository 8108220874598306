import t from 'tap'
import http from 'node:http'
import { startGateway, waitFor, type Gateway } from './helpers/gateway.js'
import { startUpstream, startTcp, startBlackhole } from './helpers/servers.js'

interface Problem { status: number, error: string, phase: string, cause: string | null, hint: string }

/** One JSON request: its status, its problem and how long the gateway took to answer. */
async function timed (gw: Gateway, path: string): Promise<{ status: number, problem: Problem, took: number }> {
  const started = Date.now()
  const res = await gw.request(path, { headers: { accept: 'application/json' } })
  const problem = await res.body.json() as Problem
  return { status: res.statusCode, problem, took: Date.now() - started }
}

t.test('connect: a target that never completes the handshake is cut at timeouts.connect', async (t) => {
  const hole = await startBlackhole()
  t.teardown(hole.close)
  const gw = await startGateway(t, { pools: { p: { targets: [hole.url], timeouts: { connect: 200 }, retry: { retries: 0 } } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const { status, problem, took } = await timed(gw, '/p/x')
  t.equal(status, 504)
  t.equal(problem.error, 'connection_timeout')
  t.equal(problem.phase, 'connect')
  t.equal(problem.cause, 'UND_ERR_CONNECT_TIMEOUT')
  t.match(problem.hint, /within 200 ms \(timeouts\.connect\)/)
  t.ok(took >= 150 && took < 1500, `answered after ${took} ms (connect timeout 200 ms)`)
})

t.test('headers: a target that accepts but never answers is cut at timeouts.headers', async (t) => {
  const silent = await startTcp(() => {})
  t.teardown(silent.close)
  const gw = await startGateway(t, { pools: { p: { targets: [silent.url], timeouts: { headers: 300 }, retry: { retries: 0 } } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const { status, problem, took } = await timed(gw, '/p/x')
  t.equal(status, 504)
  t.equal(problem.error, 'http_response_timeout')
  t.equal(problem.phase, 'headers')
  t.equal(problem.cause, 'UND_ERR_HEADERS_TIMEOUT')
  t.match(problem.hint, /no response headers within 300 ms \(timeouts\.headers\)/)
  t.ok(took >= 250 && took < 3000, `answered after ${took} ms (headers timeout 300 ms)`)
})

t.test('headers: the timer holds for a request that came on a reused keep-alive connection', async (t) => {
  const silent = await startTcp(() => {})
  t.teardown(silent.close)
  const gw = await startGateway(t, { pools: { p: { targets: [silent.url], timeouts: { headers: 100 }, retry: { retries: 0 }, outlier: false } }, routes: [{ prefix: '/p', pool: 'p' }] })
  // The same client connection carries both: the second request arrives after the gateway
  // answered the first one itself (a 504), which once left the request looking unfinished.
  for (const which of ['first', 'second']) {
    const { status, problem, took } = await timed(gw, '/p/slow')
    t.equal(status, 504)
    t.equal(problem.error, 'http_response_timeout')
    // undici's own backstop would fire at 1100 ms; the gateway's timer, at 100.
    t.ok(took < 800, `${which}: answered after ${took} ms (headers timeout 100 ms)`)
  }
})

t.test('a route overrides the pool timeout for its own requests', async (t) => {
  const silent = await startTcp(() => {})
  t.teardown(silent.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [silent.url], timeouts: { headers: 20000 }, retry: { retries: 0 } } },
    routes: [{ prefix: '/fast', pool: 'p', timeouts: { headers: 200 } }]
  })
  const res = await gw.request('/fast/x', { headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 504)
  t.match((await res.body.json() as Problem).hint, /within 200 ms/)
})

t.test('body: a body that stalls past timeouts.body cuts the client connection and is logged', async (t) => {
  const u = await startUpstream('stall', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' })
    res.write('the first half of the answer')
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url], timeouts: { body: 300 } } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const started = Date.now()
  const res = await gw.request('/p/x')
  t.equal(res.statusCode, 200, 'the status was already sent')
  await t.rejects(res.body.text(), 'the client sees a cut connection, never a silently short body')
  const took = Date.now() - started
  // undici's own body timer ticks about once a second (and is a backstop at 1300 ms here).
  t.ok(took >= 250 && took < 900, `cut after ${took} ms (body timeout 300 ms)`)
  await waitFor(() => gw.failures().length === 1, 3000, 'the failure log record')
  const record = gw.failures()[0]!
  t.equal(record.error, 'connection_read_timeout')
  t.equal(record.phase, 'body')
  t.equal(record.cause, 'UND_ERR_BODY_TIMEOUT')
  t.equal(record.level, 50)
})

t.test('body: a client that reads slowly is not taken for a stalled upstream', async (t) => {
  const SIZE = 8 * 1024 * 1024
  const u = await startUpstream('big', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) })
    res.end(Buffer.alloc(SIZE, 'x'))
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url], timeouts: { body: 200 } } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const res = await gw.request('/p/x')
  // The client reads nothing for more than three body timeouts: the gateway's buffers fill, it
  // pauses the upstream, and that silence is the client's doing.
  await new Promise((resolve) => setTimeout(resolve, 700))
  let received = 0
  for await (const chunk of res.body) received += (chunk as Buffer).length
  t.equal(received, SIZE, 'every byte arrived')
  t.same(gw.failures(), [], 'no body timeout was logged')
})

t.test('total: timeouts.total bounds the whole exchange', async (t) => {
  const u = await startUpstream('slow', (_req, res) => { setTimeout(() => res.end('late'), 2000).unref() })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url], timeouts: { headers: 10000, total: 300 } } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const { status, problem, took } = await timed(gw, '/p/x')
  t.equal(status, 504)
  t.equal(problem.error, 'http_response_timeout')
  t.match(problem.hint, /longer than 300 ms \(timeouts\.total\)/)
  t.ok(took >= 250 && took < 1900, `answered after ${took} ms, before the upstream's 2000 ms`)
})

t.test('total: a client that stops mid-upload gets 408, and neither the upstream nor the target is blamed', async (t) => {
  const u = await startUpstream('sink', (req, res) => { req.resume(); req.on('end', () => res.end('whole')) })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url], timeouts: { total: 300 } } }, routes: [{ prefix: '/p', pool: 'p' }] })
  // Half of the announced body, then silence: 1 KB is still being read for replay when the
  // timer fires; 200 KB is already streaming to the target.
  for (const size of [1000, 200_000]) {
    const answer = await new Promise<{ status: number, connection: string | undefined, problem: Problem & { blame: string } }>((resolve, reject) => {
      const request = http.request(`${gw.url}/p/upload`, { method: 'POST', headers: { 'content-length': String(size * 2), accept: 'application/json' } }, (res) => {
        let text = ''
        res.on('data', (chunk: Buffer) => { text += chunk.toString() })
        res.on('end', () => { resolve({ status: res.statusCode!, connection: res.headers.connection, problem: JSON.parse(text) as Problem & { blame: string } }) })
      })
      request.on('error', reject)
      request.write('x'.repeat(size))
    })
    t.equal(answer.status, 408, `${size} bytes of ${size * 2}`)
    t.equal(answer.connection, 'close')
    t.match(answer.problem, { error: 'http_request_error', blame: 'client', phase: 'send' })
    t.match(answer.problem.hint, /had not sent its whole body when timeouts\.total \(300 ms\) passed/)
  }
  t.same(gw.failures().map((record) => [record.status, record.level]), [[408, 40], [408, 40]])
  t.match(gw.app.upstream.pool('p').targets()[0], { failures: 0, state: 'healthy' })
})
