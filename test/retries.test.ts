import t from 'tap'
import { Readable } from 'node:stream'
import { startGateway } from './helpers/gateway.js'
import { startUpstream, startTcp, startRefusing, echo, type Running } from './helpers/servers.js'
import type { Problem } from '../lib/errors/problem.js'

/** A refusing target, held until the end of the file's run. */
const dead = async (): Promise<string> => {
  const refusing = await startRefusing()
  t.teardown(refusing.close)
  return refusing.url
}
const teardown = (t: { teardown: (fn: () => unknown) => void }, ...servers: Running[]): void => { for (const s of servers) t.teardown(s.close) }

t.test('a refused connection is retried on another target: the client never sees the dead one', async (t) => {
  const alive = await startUpstream('alive')
  teardown(t, alive)
  const gw = await startGateway(t, { pools: { p: { targets: [await dead(), alive.url], outlier: false } }, routes: [{ prefix: '/p', pool: 'p' }] })
  for (let i = 0; i < 10; i++) t.equal((await gw.request('/p/x')).statusCode, 200)
  t.equal(alive.hits, 10)
  t.same(gw.failures(), [], 'no failure reached a client, so none is logged as one')
  t.equal(gw.app.upstream.pool('p').targets()[0]!.failures, 5, 'the dead target was tried (round-robin) and failed each time')
  const retried = gw.logs.filter((r) => r.retried === true)
  t.equal(retried.length, 5, 'each request served after a failed try writes one record')
  t.match(retried[0], {
    level: 30,
    status: 200,
    pool: 'p',
    target: alive.url.slice('http://'.length),
    attempts: [{ error: 'connection_refused', cause: 'ECONNREFUSED', phase: 'connect' }, { error: null, status: 200 }],
    msg: /^200 after 2 tries: p target 127\.0\.0\.1:\d+ answered; earlier: 127\.0\.0\.1:\d+ connection_refused \(ECONNREFUSED\)$/
  })
})

t.test('default retry.on: a reset is retried for GET on another target, not for POST', async (t) => {
  const alive = await startUpstream('alive', echo('alive'))
  const resetter = await startTcp((socket) => { socket.once('data', () => socket.destroy()) })
  teardown(t, alive, resetter)
  const gw = await startGateway(t, { pools: { p: { targets: [resetter.url, alive.url], outlier: false } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const statuses: Record<string, number[]> = { GET: [], POST: [] }
  for (const method of ['GET', 'POST'] as const) {
    for (let i = 0; i < 4; i++) {
      const res = await gw.request('/p/x', { method, body: method === 'POST' ? 'x' : undefined })
      statuses[method]!.push(res.statusCode)
      await res.body.dump()
    }
  }
  t.same(statuses.GET, [200, 200, 200, 200], 'every GET served')
  t.same(statuses.POST!.sort(), [200, 200, 502, 502], 'a POST the reset target may have acted on is not replayed')
})

t.test('two dead targets of three, default options: every request is served by the live one', async (t) => {
  // One dead target stays in rotation (outlier.maxEjectedPercent 50 ejects one of three), so
  // half the first tries are refused. Those retries are free; with them charged to the retry
  // budget, about 30% of these requests ended as 502.
  const alive = await startUpstream('alive')
  teardown(t, alive)
  const gw = await startGateway(t, { pools: { p: { targets: [await dead(), await dead(), alive.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const statuses: Record<number, number> = {}
  let sent = 0
  await Promise.all(Array.from({ length: 20 }, async () => {
    while (sent < 600) {
      sent++
      const res = await gw.request('/p/x')
      await res.body.dump()
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
    }
  }))
  t.same(statuses, { 200: 600 })
  t.same(gw.failures(), [])
})

t.test('a retry after a refused connection takes no retry budget; one after a reset does', async (t) => {
  const alive = await startUpstream('alive')
  const resetter = await startTcp((socket) => { socket.once('data', () => socket.destroy()) })
  teardown(t, alive, resetter)
  const noBudget = { ratio: 0, minPerSecond: 0 }
  const refused = await startGateway(t, {
    pools: { p: { targets: [await dead(), alive.url], balancer: 'round-robin', retry: { budget: noBudget }, outlier: false } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  for (let i = 0; i < 6; i++) t.equal((await refused.request('/p/x')).statusCode, 200)
  t.same(refused.failures(), [])

  const reset = await startGateway(t, {
    pools: { p: { targets: [resetter.url, alive.url], balancer: 'round-robin', retry: { on: ['reset'], budget: noBudget }, outlier: false } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const statuses = []
  for (let i = 0; i < 6; i++) statuses.push((await reset.request('/p/x')).statusCode)
  t.same(statuses.sort(), [200, 200, 200, 502, 502, 502])
  t.match(reset.failures()[0]!.msg, /the retry budget is spent/)
})

t.test('a POST is retried after a refused connect (never sent) but not after a reset (maybe sent)', async (t) => {
  const alive = await startUpstream('alive', echo('alive'))
  const resetter = await startTcp((socket) => { socket.once('data', () => socket.destroy()) })
  teardown(t, alive, resetter)
  const refusedFirst = await startGateway(t, {
    pools: { p: { targets: [await dead(), alive.url], retry: { on: ['connect-failure', 'reset'] }, outlier: false } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const posted = await refusedFirst.request('/p/orders', { method: 'POST', body: 'x'.repeat(1000), headers: { 'content-type': 'text/plain' } })
  t.equal(posted.statusCode, 200)
  t.match(await posted.body.json(), { method: 'POST', bytes: 1000 }, 'the body was replayed in full to the second target')

  const resetFirst = await startGateway(t, {
    pools: { p: { targets: [resetter.url, alive.url], retry: { on: ['connect-failure', 'reset'] }, outlier: false } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const res = await resetFirst.request('/p/orders', { method: 'POST', body: 'order', headers: { accept: 'application/json' } })
  t.equal(res.statusCode, 502)
  const problem = await res.body.json() as Problem
  t.match(problem, { error: 'connection_terminated', attempts: [{ error: 'connection_terminated' }] })
  t.equal(problem.attempts!.length, 1)
  t.match(resetFirst.failures()[0], { note: 'not retried: POST is not in retry.methods and the upstream may have acted on it' })
  t.match(problem.hint, /Not retried: POST is not in retry\.methods/)
  const get = await resetFirst.request('/p/orders')
  t.equal(get.statusCode, 200, 'the same failure on a GET is retried')
  await get.body.dump()
})

t.test('a large streamed body is not retried, and the log says why', async (t) => {
  const alive = await startUpstream('alive', echo('alive'))
  teardown(t, alive)
  const gw = await startGateway(t, { pools: { p: { targets: [await dead(), alive.url], outlier: false } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const size = 200 * 1024
  const res = await gw.request('/p/upload', { method: 'PUT', body: Readable.from([Buffer.alloc(size, 1)]), headers: { 'content-length': String(size), accept: 'application/json' } })
  t.equal(res.statusCode, 502)
  await res.body.dump()
  t.match(gw.failures()[0], {
    error: 'connection_refused',
    note: `not retried: the request body could not be replayed (a streamed body of ${size} bytes, over the 65536-byte replay limit)`
  })
  t.equal(alive.hits, 0)
})

t.test('an upstream 5xx is retried when retry.on has "5xx"; the client gets the good answer', async (t) => {
  const sad = await startUpstream('sad', (_req, res) => { res.statusCode = 503; res.end('sad') })
  const alive = await startUpstream('alive')
  teardown(t, sad, alive)
  const gw = await startGateway(t, { pools: { p: { targets: [sad.url, alive.url], retry: { on: ['5xx'] }, outlier: false } }, routes: [{ prefix: '/p', pool: 'p' }] })
  for (let i = 0; i < 4; i++) t.equal((await gw.request('/p/x')).statusCode, 200)
  t.equal(sad.hits, 2)
  t.equal(alive.hits, 4)
})

t.test('a POST answered 503 is not sent to a second target: the upstream may have acted on it', async (t) => {
  const sad = await startUpstream('sad', (req, res) => { req.resume(); req.on('end', () => { res.statusCode = 503; res.end('sad') }) })
  const alive = await startUpstream('alive')
  teardown(t, sad, alive)
  const gw = await startGateway(t, { pools: { p: { targets: [sad.url, alive.url], retry: { on: ['5xx'] }, outlier: false, balancer: 'round-robin' } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const answers: string[] = []
  for (let i = 0; i < 4; i++) {
    const res = await gw.request('/p/x', { method: 'POST', body: 'order' })
    answers.push(`${res.statusCode} ${res.statusCode === 503 ? await res.body.text() : JSON.parse(await res.body.text()).name as string}`)
  }
  t.same(answers, ['503 sad', '200 alive', '503 sad', '200 alive'], 'each POST went to one target, and its answer passed on as it was')
  t.equal(sad.hits, 2)
  t.equal(alive.hits, 2)
})

t.test('the retry budget stops retries when every target fails (counted upstream)', async (t) => {
  const failing = await Promise.all([1, 2, 3].map(async (i) => await startUpstream(`f${i}`, (_req, res) => { res.statusCode = 503; res.end() })))
  teardown(t, ...failing)
  const hits = (): number => failing.reduce((sum, s) => sum + s.hits, 0)
  const requests = 60
  const run = async (budget: { ratio: number, minPerSecond: number }): Promise<number> => {
    for (const s of failing) s.hits = 0
    const gw = await startGateway(t, {
      pools: { p: { targets: failing.map((s) => s.url), retry: { on: ['5xx'], retries: 2, budget }, outlier: false } },
      routes: [{ prefix: '/p', pool: 'p' }]
    })
    await Promise.all(Array.from({ length: 6 }, async () => {
      for (let i = 0; i < requests / 6; i++) await (await gw.request('/p/x')).body.dump()
    }))
    await gw.close()
    return hits()
  }
  const unbounded = await run({ ratio: 1, minPerSecond: 1000 })
  const budgeted = await run({ ratio: 0.2, minPerSecond: 5 })
  t.equal(unbounded, requests * 3, 'without a budget every request is tried three times')
  // Within any second, retries stay under max(5, 0.2 × requests): a few dozen at most here.
  t.ok(budgeted <= requests + Math.ceil(requests * 0.2) + 10, `with the budget: ${budgeted} upstream requests for ${requests} client requests`)
  t.ok(budgeted >= requests, 'every request was tried once')
})

t.test('timeouts.total bounds all tries together', async (t) => {
  const silent = await Promise.all([1, 2, 3].map(async () => await startTcp(() => {})))
  teardown(t, ...silent)
  const gw = await startGateway(t, {
    pools: { p: { targets: silent.map((s) => s.url), timeouts: { headers: 300, total: 500 }, retry: { on: ['timeout'], retries: 2 }, outlier: false } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const started = Date.now()
  const res = await gw.request('/p/x', { headers: { accept: 'application/json' } })
  const took = Date.now() - started
  t.equal(res.statusCode, 504)
  const problem = await res.body.json() as Problem
  t.equal(problem.error, 'http_response_timeout')
  t.equal(problem.attempts!.length, 2, 'a second try started and was cut by the total timeout')
  t.match(problem.hint, /longer than 500 ms \(timeouts\.total\)/)
  t.ok(took < 850, `answered after ${took} ms: three full tries would take 900 ms`)
})

t.test('a retry goes to a different target each time while there is one', async (t) => {
  const targets = await Promise.all([1, 2, 3].map(async () => await dead()))
  const gw = await startGateway(t, {
    pools: { p: { targets, retry: { retries: 2 }, outlier: false } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const problem = await (await gw.request('/p/x', { headers: { accept: 'application/json' } })).body.json() as Problem
  t.equal(problem.attempts!.length, 3)
  t.equal(new Set(problem.attempts!.map((a) => a.target)).size, 3, 'three tries, three targets')
  t.match(gw.failures()[0]!.msg, /\(after 3 tries\)/)
})
