// Health checks here answer at once: health.timeout is set far above what a loaded machine may
// delay them, so each verdict comes from the answer the test arranged, never from the machine.
import t from 'tap'
import { startGateway, waitFor, type Gateway, type LogRecord } from './helpers/gateway.js'
import { startUpstream, startTcp, deadTarget, type Running } from './helpers/servers.js'
import type { Problem } from '../lib/errors/problem.js'

/** How long a condition may take to come on a loaded machine; a passing wait returns at once. */
const WAIT = 30_000

type Mode = 'ok' | 'fail' | 'degraded' | 'hang'

/** An upstream whose /healthz answers as `mode` says; every other path answers its name. */
async function service (t: { teardown: (fn: () => unknown) => void }, name: string): Promise<Running & { mode: Mode, checks: number, served: number }> {
  const s = Object.assign(await startUpstream(name, (req, res) => {
    if (req.url === '/healthz') {
      s.checks++
      if (s.mode === 'hang') return
      res.writeHead(s.mode === 'fail' ? 503 : 200, { 'content-type': 'text/plain' })
      res.end(s.mode === 'degraded' ? 'degraded' : 'ok')
      return
    }
    s.served++
    res.end(name)
  }), { mode: 'ok' as Mode, checks: 0, served: 0 })
  t.teardown(s.close)
  return s
}

const transitions = (gw: Gateway, target?: string): LogRecord[] =>
  gw.logs.filter((r) => r.from !== undefined && (target === undefined || r.target === target))
const hostPort = (s: Running): string => s.url.slice('http://'.length)
const stateOf = (gw: Gateway, pool: string, s: Running): string => gw.app.upstream.pool(pool).targets().find((x) => x.url === s.url)!.state

async function send (gw: Gateway, n: number, path = '/p/x'): Promise<string[]> {
  const bodies: string[] = []
  for (let i = 0; i < n; i++) {
    const res = await gw.request(path)
    bodies.push(res.statusCode === 200 ? await res.body.text() : `${res.statusCode}`)
    if (res.statusCode !== 200) await res.body.dump()
  }
  return bodies
}

t.test('a target failing its health endpoint leaves rotation after unhealthyAfter checks and returns after healthyAfter', async (t) => {
  const a = await service(t, 'a')
  const b = await service(t, 'b')
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url, b.url], health: { path: '/healthz', interval: 40, timeout: 2000, unhealthyAfter: 3, healthyAfter: 2 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  await waitFor(() => stateOf(gw, 'p', a) === 'healthy' && stateOf(gw, 'p', b) === 'healthy', WAIT, 'first verdicts')
  // On a quiet machine the first check passes: unknown → healthy. On a loaded one a first check
  // may miss health.timeout and the verdict go through unhealthy first. Whatever the load, the
  // story starts at unknown, ends healthy, and each record follows from the one before.
  const first = transitions(gw, hostPort(a)).map((r) => [r.from, r.to] as [unknown, unknown])
  t.equal(first[0]?.[0], 'unknown', 'the first record leaves unknown')
  t.equal(first.at(-1)?.[1], 'healthy', 'the last record arrives at healthy')
  t.ok(first.every(([from], i) => i === 0 || from === first[i - 1]![1]), `each record starts where the one before ended: ${JSON.stringify(first)}`)
  const before = first.length

  a.mode = 'fail'
  await waitFor(() => stateOf(gw, 'p', a) === 'unhealthy', WAIT, 'a to go unhealthy')
  const out = transitions(gw, hostPort(a))[before]!
  t.match(out, { level: 40, pool: 'p', from: 'healthy', to: 'unhealthy', reason: /^failed 3 health checks in a row \(health\.unhealthyAfter = 3\): status 503, expected 2xx$/ })
  t.same(new Set(await send(gw, 10)), new Set(['b']), 'no request reaches the unhealthy target')
  t.match(gw.app.upstream.pool('p').targets()[0], { state: 'unhealthy', health: 'unhealthy', why: /^failing health checks since .*: status 503, expected 2xx$/, lastCheck: { ok: false, status: 503 } })

  a.mode = 'ok'
  await waitFor(() => stateOf(gw, 'p', a) === 'healthy', WAIT, 'a to come back')
  t.match(transitions(gw, hostPort(a))[before + 1], { level: 30, from: 'unhealthy', to: 'healthy', reason: /^passed 2 health checks in a row \(health\.healthyAfter = 2\)/ })
  t.same(new Set(await send(gw, 10)), new Set(['a', 'b']))
  t.equal(transitions(gw, hostPort(a)).length, before + 2, 'one record per transition, none per successful check')
})

t.test('expect.body: a 200 whose body does not match is a failed check', async (t) => {
  const a = await service(t, 'a')
  a.mode = 'degraded'
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url], health: { path: '/healthz', interval: 40, timeout: 2000, expect: { status: 200, body: /^ok$/ } } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  await waitFor(() => stateOf(gw, 'p', a) === 'unhealthy', WAIT, 'a to go unhealthy')
  t.match(gw.app.upstream.pool('p').targets()[0]!.lastCheck, { ok: false, status: 200, reason: 'body did not match /^ok$/' })
})

t.test('a check that hangs is cut at health.timeout and reads like a timed-out request', async (t) => {
  const a = await service(t, 'a')
  a.mode = 'hang'
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url], health: { path: '/healthz', interval: 40, timeout: 150 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  await waitFor(() => stateOf(gw, 'p', a) === 'unhealthy', WAIT, 'a to go unhealthy')
  const check = gw.app.upstream.pool('p').targets()[0]!.lastCheck!
  t.match(check, { ok: false, status: null, error: 'http_response_timeout', reason: 'no answer within health.timeout (150 ms)' })
  t.ok(check.ms >= 140 && check.ms < 1500, `cut after ${check.ms} ms`)
})

t.test('a check of a port where nothing listens is classified like a request', async (t) => {
  const gw = await startGateway(t, {
    pools: { p: { targets: [await deadTarget(t)], health: { path: '/healthz', interval: 40, timeout: 2000 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  await waitFor(() => gw.app.upstream.pool('p').targets()[0]!.state === 'unhealthy', WAIT, 'unhealthy')
  t.match(gw.app.upstream.pool('p').targets()[0]!.lastCheck, { error: 'connection_refused', cause: 'ECONNREFUSED', reason: 'service refused the connection (ECONNREFUSED)' })
})

t.test('passive: a target killed under a stream of requests is ejected after consecutiveFailures', async (t) => {
  const a = await service(t, 'a')
  const b = await service(t, 'b')
  const gw = await startGateway(t, {
    // Retries off: this shows what clients see before retries hide it (retry tests cover that).
    pools: { p: { targets: [a.url, b.url], outlier: { consecutiveFailures: 3, ejectFor: 60000 }, retry: { retries: 0 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  t.same(await send(gw, 4), ['a', 'b', 'a', 'b'])
  await a.close()
  const bodies = await send(gw, 12)
  t.same(bodies.filter((b) => b === '502').length, 3, 'exactly consecutiveFailures requests failed, then the target was out')
  t.same(bodies.slice(6), ['b', 'b', 'b', 'b', 'b', 'b'])
  t.match(transitions(gw, hostPort(a)), [
    { level: 40, from: 'healthy', to: 'failing', reason: /^2 requests in a row failed, the last: connection_refused \(ECONNREFUSED\)$/ },
    { level: 40, from: 'failing', to: 'ejected', reason: /^ejected for 60000 ms after 3 failures in a row \(outlier\.consecutiveFailures = 3\), the last: connection_refused \(ECONNREFUSED\)$/ }
  ])
  t.match(gw.app.upstream.pool('p').targets()[0], { state: 'ejected', ejections: 1, why: /ejected after 3 failures in a row.*; back at / })
})

t.test('without active checks, a target whose last requests failed shows as failing, not healthy, until it answers again', async (t) => {
  const a = await service(t, 'a')
  const b = await service(t, 'b')
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url, b.url], retry: { retries: 0 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const port = a.port
  await a.close()
  // Round-robin: four requests, two to the dead target (outlier.consecutiveFailures is 5).
  t.same(await send(gw, 4), ['502', 'b', '502', 'b'])
  const snapshot = gw.app.upstream.pool('p').targets()[0]!
  t.equal(snapshot.state, 'failing')
  t.match(snapshot.why, /^its last 2 requests failed, the last: connection_refused \(ECONNREFUSED\) at .*; still in rotation; 5 in a row eject it \(outlier\.consecutiveFailures\)$/)
  t.match(transitions(gw, hostPort(a)), [{ level: 40, from: 'healthy', to: 'failing' }])
  const report = await (await gw.request('/_upstream', { headers: { accept: 'application/json' } })).body.json() as { pools: Array<{ targets: Array<{ state: string }> }> }
  t.equal(report.pools[0]!.targets[0]!.state, 'failing', 'the status page says so too')

  // The service comes back on its port: the next answer ends the failing state.
  const http = await import('node:http')
  const server = http.createServer((_req, res) => res.end('a again'))
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
  t.same(await send(gw, 2), ['a again', 'b'])
  t.equal(stateOf(gw, 'p', a), 'healthy')
  t.match(transitions(gw, hostPort(a)).at(-1), { level: 30, from: 'failing', to: 'healthy', reason: 'answered 200 after 2 failed requests in a row' })
})

t.test('ejection time doubles when a target back on probation fails again', async (t) => {
  const a = await service(t, 'a')
  const b = await service(t, 'b')
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url, b.url], retry: { retries: 0 }, outlier: { consecutiveFailures: 2, ejectFor: 150, maxEjectFor: 10000 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  await a.close()
  await send(gw, 4)
  t.equal(stateOf(gw, 'p', a), 'ejected')
  // The clock ends the ejection; the timer that logs it runs a moment later.
  await waitFor(() => transitions(gw, hostPort(a)).length === 2, WAIT, 'the ejection to end')
  t.match(transitions(gw, hostPort(a))[1], { from: 'ejected', to: 'healthy', reason: /on probation: one more failure ejects it for 300 ms/ })
  // The first request back to it fails, and that alone ejects it again, for twice as long.
  await send(gw, 2)
  t.equal(stateOf(gw, 'p', a), 'ejected')
  const snapshot = gw.app.upstream.pool('p').targets()[0]!
  t.equal(snapshot.ejections, 2)
  t.match(transitions(gw, hostPort(a))[2]!.reason, /^ejected for 300 ms after failed again on its first request back.*; ejection 2, time doubled$/)
})

t.test('maxEjectedPercent caps ejections, but one target may always be ejected', async (t) => {
  const dead = await Promise.all([1, 2, 3, 4].map(async () => await deadTarget(t)))
  const gw = await startGateway(t, {
    pools: {
      four: { targets: dead, retry: { retries: 0 }, outlier: { consecutiveFailures: 1, maxEjectedPercent: 50, ejectFor: 60000 } },
      two: { targets: dead.slice(0, 2), retry: { retries: 0 }, outlier: { consecutiveFailures: 1, maxEjectedPercent: 10, ejectFor: 60000 } }
    },
    routes: [{ prefix: '/four', pool: 'four' }, { prefix: '/two', pool: 'two' }]
  })
  await send(gw, 12, '/four/x')
  t.equal(gw.app.upstream.pool('four').targets().filter((x) => x.state === 'ejected').length, 2, '50% of 4')
  await send(gw, 6, '/two/x')
  t.equal(gw.app.upstream.pool('two').targets().filter((x) => x.state === 'ejected').length, 1, '10% of 2 rounds to none, but one is always allowed')
})

t.test('slow start: a target enabled again ramps its share up over slowStart', async (t) => {
  const a = await service(t, 'a')
  const b = await service(t, 'b')
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url, b.url], slowStart: 1500 } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  gw.app.upstream.drain('p', a.url)
  gw.app.upstream.enable('p', a.url)
  const early = (await send(gw, 40)).filter((x) => x === 'a').length
  const share = gw.app.upstream.pool('p').targets()[0]!.weightShare
  t.ok(share < 0.6, `share right after enable: ${share}`)
  await waitFor(() => gw.app.upstream.pool('p').targets()[0]!.weightShare === 1, WAIT, 'the ramp to finish')
  const late = (await send(gw, 40)).filter((x) => x === 'a').length
  t.ok(early < late, `a took ${early}/40 while warming, ${late}/40 after`)
  t.equal(late, 20, 'at full weight, an even split')
})

t.test('backup targets serve only while no primary can', async (t) => {
  const primary = await service(t, 'primary')
  const backup = await service(t, 'backup')
  const gw = await startGateway(t, {
    pools: { p: { targets: [primary.url, { url: backup.url, backup: true }] } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  t.same(new Set(await send(gw, 6)), new Set(['primary']))
  gw.app.upstream.drain('p', primary.url)
  t.same(new Set(await send(gw, 6)), new Set(['backup']))
  gw.app.upstream.enable('p', primary.url)
  t.same(new Set(await send(gw, 6)), new Set(['primary']))
  t.equal(gw.app.upstream.pool('p').targets()[1]!.state, 'backup')
})

t.test('all down: 503 destination_unavailable at once, with why each target is out (full) and nothing internal (public)', async (t) => {
  const a = await service(t, 'a')
  const b = await service(t, 'b')
  b.mode = 'fail'
  const options = {
    pools: { p: { targets: [a.url, b.url], health: { path: '/healthz', interval: 40, timeout: 2000 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  }
  const full = await startGateway(t, { ...options, errors: { expose: 'full' } })
  const pub = await startGateway(t, { ...options, errors: { expose: 'public' } })
  for (const gw of [full, pub]) {
    await waitFor(() => stateOf(gw, 'p', b) === 'unhealthy', WAIT, 'b unhealthy')
    gw.app.upstream.drain('p', a.url)
  }
  const started = Date.now()
  const res = await full.request('/p/x', { headers: { accept: 'application/json' } })
  const took = Date.now() - started
  t.equal(res.statusCode, 503)
  t.ok(took < 1000, `answered in ${took} ms, without waiting for a timeout`)
  t.match(res.headers['retry-after'], /^\d+$/)
  const problem = await res.body.json() as Problem
  t.match(problem, { error: 'destination_unavailable', blame: 'upstream', phase: 'route', temporary: true })
  t.match(problem.hint, new RegExp(`${hostPort(a)}: drained by an operator since `))
  t.match(problem.hint, new RegExp(`${hostPort(b)}: failing health checks since .*: status 503, expected 2xx`))
  t.equal(a.served + b.served, 0)

  const publicRes = await pub.request('/p/x', { headers: { accept: 'application/json' } })
  t.equal(publicRes.statusCode, 503)
  const text = await publicRes.body.text()
  t.notOk(text.includes('127.0.0.1') || text.includes('drained'), 'no target or reason under public exposure')
})

t.test('panic: with every target out, traffic goes to all of them and the log says so', async (t) => {
  const a = await service(t, 'a')
  a.mode = 'fail'
  const gw = await startGateway(t, {
    pools: { p: { targets: [a.url], panic: true, health: { path: '/healthz', interval: 40, timeout: 2000 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  await waitFor(() => stateOf(gw, 'p', a) === 'unhealthy', WAIT, 'unhealthy')
  t.same(await send(gw, 3), ['a', 'a', 'a'])
  t.equal(gw.app.upstream.pools()[0]!.panic, true)
  t.equal(gw.logs.filter((r) => r.panic === true).length, 1, 'one record when panic starts')
  a.mode = 'ok'
  await waitFor(() => stateOf(gw, 'p', a) === 'healthy', WAIT, 'healthy')
  await send(gw, 1)
  t.equal(gw.logs.filter((r) => r.panic === false).length, 1, 'one record when it ends')
})

t.test('drain: requests in flight finish, new ones go elsewhere; enable restores', async (t) => {
  let release: (() => void) | undefined
  const slow = await startUpstream('slow', (req, res) => {
    if (req.url === '/hold') release = () => res.end('slow done')
    else res.end('slow')
  })
  t.teardown(slow.close)
  const other = await service(t, 'other')
  const gw = await startGateway(t, { pools: { p: { targets: [slow.url, other.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const held = gw.request('/p/hold').then(async (res) => await res.body.text())
  await waitFor(() => release !== undefined, WAIT, 'the held request to arrive')
  gw.app.upstream.drain('p', slow.url)
  t.same(new Set(await send(gw, 6)), new Set(['other']))
  release!()
  t.equal(await held, 'slow done', 'the request in flight finished')
  t.match(transitions(gw, hostPort(slow))[0], { from: 'healthy', to: 'draining', reason: /drained by an operator/ })
  gw.app.upstream.enable('p', slow.url)
  t.same(new Set(await send(gw, 6)), new Set(['slow', 'other']))
  t.throws(() => gw.app.upstream.drain('p', 'http://127.0.0.1:9'), { message: /pool "p" has no target "http:\/\/127\.0\.0\.1:9"/ })
})

t.test('half-open: a fully ejected single-target pool answers fast 503s, then serves within a second of its service returning', async (t) => {
  // While "down", the port takes connections and resets them: each one is counted.
  const down = await startTcp((socket) => socket.destroy())
  const port = down.port
  const gw = await startGateway(t, { pools: { solo: { targets: [down.url] } }, routes: [{ prefix: '/p', pool: 'solo' }] })
  t.teardown(async () => { await down.close() })

  // Five failures eject the only target (outlier.consecutiveFailures, ejectFor 30 s by default).
  await waitFor(() => { void send(gw, 1); return stateOf(gw, 'solo', down) === 'ejected' }, WAIT, 'the target to be ejected')
  await waitFor(() => gw.app.upstream.pool('solo').targets()[0]!.inFlight === 0, WAIT, 'requests in flight to end')
  const connectsBefore = down.hits
  const started = Date.now()
  const statuses: number[] = []
  for (let i = 0; i < 40; i++) {
    const res = await gw.request('/p/x', { headers: { accept: 'application/json' } })
    statuses.push(res.statusCode)
    const problem = await res.body.json() as Problem
    if (res.statusCode === 503) t.equal(problem.error, 'destination_unavailable')
  }
  const spent = Date.now() - started
  const connects = down.hits - connectsBefore
  t.ok(statuses.filter((s) => s === 503).length >= 38, `fast 503s while it is down (${statuses.join(' ')})`)
  t.ok(connects <= Math.ceil(spent / 1000) + 1, `${connects} connects in ${spent} ms: at most one trial a second, not one per request`)

  // The service comes back on the same port.
  await down.close()
  const http = await import('node:http')
  const server = http.createServer((_req, res) => res.end('back'))
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
  const returned = Date.now()
  let served = 0
  await waitFor(() => {
    void gw.request('/p/x').then(async (res) => { if ((await res.body.text()) === 'back') served++ }, () => {})
    return served > 0
  }, WAIT, 'the service to be served again')
  const after = Date.now() - returned
  t.ok(after < 1500, `served again ${after} ms after the service returned, not after outlier.ejectFor (30 s)`)
  t.match(transitions(gw).at(-1), { from: 'ejected', to: 'healthy', reason: /^a trial request succeeded/ })
  t.same(await send(gw, 3), ['back', 'back', 'back'])
})

t.test('half-open after a re-ejection too: one trial at a time, at most one a second, the first a second after the ejection', async (t) => {
  // Each connection is taken and answered, or reset, as `up` says; every request is timed.
  let up = false
  const tries: number[] = []
  const flaky = await startTcp((socket) => {
    tries.push(Date.now())
    if (!up) { socket.destroy(); return }
    socket.once('data', () => { socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok') })
  })
  t.teardown(async () => { await flaky.close() })
  const gw = await startGateway(t, { pools: { solo: { targets: [flaky.url], outlier: { consecutiveFailures: 2 } } }, routes: [{ prefix: '/p', pool: 'solo' }] })
  const target = hostPort(flaky)
  const ejections = (): LogRecord[] => transitions(gw, target).filter((r) => r.to === 'ejected')
  const hammer = async (until: () => boolean, what: string): Promise<void> => {
    await waitFor(() => { void gw.request('/p/x').then(async (res) => { await res.body.dump() }, () => {}); return until() }, 8000, what)
  }

  await hammer(() => ejections().length === 1, 'the first ejection')
  const firstEjection = ejections()[0]!.time as number
  // The service answers again: the first trial (not before a second) succeeds and readmits it.
  up = true
  await hammer(() => transitions(gw, target).some((r) => r.from === 'ejected' && r.to === 'healthy'), 'a trial to succeed')
  const readmitted = transitions(gw, target).find((r) => r.from === 'ejected' && r.to === 'healthy')!
  t.ok((readmitted.time as number) - firstEjection >= 1000, 'the first trial came a second after the ejection')
  // It fails again on probation: ejected again, from the state it was in. One request at a
  // time now, so none is on its way to the target when the re-ejection comes (such a request
  // connects after it, but it is no trial: it was sent while the target was in rotation).
  await waitFor(() => gw.app.upstream.pool('solo').targets()[0]!.inFlight === 0, 5000, 'the requests in flight to end')
  up = false
  for (let i = 0; i < 20 && ejections().length < 2; i++) await (await gw.request('/p/x')).body.dump()
  t.equal(ejections().length, 2, 'the re-ejection')
  const second = ejections()[1]!
  t.equal(second.from, 'healthy', 'it was back in rotation, on probation')
  // On probation its first request back failing re-ejects it; on a busy machine a request of
  // the hammer may still come back a success first, and then two failures in a row do.
  t.match(second.reason, /failed again on its first request back|2 failures in a row/)
  const reEjectedAt = second.time as number
  const before = tries.length
  // Requests keep coming for 2.5 s: the trials they let through are one a second at most.
  const end = Date.now() + 2500
  while (Date.now() < end) {
    await Promise.all([1, 2, 3].map(async () => { await (await gw.request('/p/x')).body.dump() }))
  }
  const trials = tries.slice(before).filter((at) => at > reEjectedAt)
  t.ok(trials.length >= 1 && trials.length <= 3, `${trials.length} trials in 2.5 s`)
  t.ok(trials[0]! - reEjectedAt >= 990, `the first trial ${trials[0]! - reEjectedAt} ms after the re-ejection`)
  for (let i = 1; i < trials.length; i++) t.ok(trials[i]! - trials[i - 1]! >= 990, `trials ${trials[i]! - trials[i - 1]!} ms apart`)
  t.same(transitions(gw, target).map((r) => `${String(r.from)} → ${String(r.to)}`), ['healthy → ejected', 'ejected → healthy', 'healthy → ejected'], 'each record says the state the target was in')
})
