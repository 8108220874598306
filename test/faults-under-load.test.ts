// Faults under steady load: while ten clients send a few thousand GETs, one thing goes wrong at
// a time. Afterwards the process is fine, every client got a proper answer or the gateway's
// error (none waited past its timeouts + a few seconds), the log has one record per failed answer, and no
// healthy target was ejected.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { Agent, request } from 'undici'
import { startGateway, waitFor, type Gateway } from './helpers/gateway.js'
import { startUpstream, type Running } from './helpers/servers.js'
import type { PoolInput } from '../lib/index.js'

type Mode = 'ok' | 'hang' | 'reset-mid-body' | 'slow'

interface Service extends Running { mode: Mode }

const BODY = 'x'.repeat(2048)

/** An upstream whose behaviour can be switched mid-run. */
async function service (t: { teardown: (fn: () => unknown) => void }): Promise<Service> {
  const held = new Set<http.ServerResponse>()
  const s: Service = Object.assign(await startUpstream('svc', (req, res) => {
    if (req.url === '/big') {
      // A large answer for clients that never read it.
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const chunk = Buffer.alloc(64 * 1024)
      const pump = (): void => { while (res.write(chunk)); }
      res.on('drain', pump)
      pump()
      held.add(res)
      return
    }
    switch (s.mode) {
      case 'hang': held.add(res); return
      case 'reset-mid-body':
        res.writeHead(200, { 'content-length': String(BODY.length) })
        res.write(BODY.slice(0, 100))
        setImmediate(() => res.socket?.destroy())
        return
      case 'slow': setTimeout(() => res.end(BODY), 50); return
      default: res.end(BODY)
    }
  }), { mode: 'ok' as Mode })
  t.teardown(async () => { for (const res of held) res.destroy(); await s.close() })
  return s
}

// Long enough that a healthy answer never misses it on a loaded machine, short enough that a
// hanging target costs little.
const HEADERS_TIMEOUT = 1000
// What a client allows beyond the gateway's timeouts before it counts as waiting too long: a
// loaded machine can stall the event loop for a while; a hang lasts forever.
const SLACK = 3000
const AMOUNT = 1500
// Conditions that come in milliseconds on a quiet machine may take many seconds on a loaded one.
const WAIT = 60_000
t.setTimeout(240_000)

interface Run { ok: number, gatewayErrors: number, cut: number, timedOut: number, failedAnswers: number }

/**
 * Steady load (10 clients in a loop, AMOUNT GETs); `fault` is applied once a third are answered.
 * Each request may take the gateway's own timeouts + SLACK at most, or it counts as timed out.
 */
async function underLoad (gw: Gateway, fault: () => void | Promise<void>): Promise<Run> {
  const client = new Agent({ keepAliveTimeout: 1000 })
  const run: Run = { ok: 0, gatewayErrors: 0, cut: 0, timedOut: 0, failedAnswers: 0 }
  let sent = 0
  let answered = 0
  let faulted = false
  await Promise.all(Array.from({ length: 10 }, async () => {
    while (sent < AMOUNT) {
      sent++
      const signal = AbortSignal.timeout(HEADERS_TIMEOUT + SLACK)
      try {
        const res = await request(`${gw.url}/p/x`, { dispatcher: client, signal })
        await res.body.text()
        if (res.statusCode === 200) run.ok++
        else run.gatewayErrors++
      } catch {
        if (signal.aborted) run.timedOut++
        else run.cut++
      }
      answered++
      if (!faulted && answered >= AMOUNT / 3) {
        faulted = true
        await fault()
      }
    }
  }))
  await client.close()
  run.failedAnswers = run.gatewayErrors + run.cut
  return run
}

function checkRun (t: Test, gw: Gateway, run: Run, healthy: Service[]): void {
  t.equal(run.timedOut, 0, `no client waited past its timeouts + ${SLACK} ms`)
  t.equal(run.ok + run.gatewayErrors + run.cut, AMOUNT, `every request ended: ${run.ok} 200, ${run.gatewayErrors} gateway errors, ${run.cut} cut`)
  // A cut response has its record at error level too; a gateway error is a non-200 answer.
  t.equal(gw.failures().length, run.failedAnswers, 'one log record per failed answer')
  for (const target of gw.app.upstream.pool('p').targets()) {
    if (healthy.some((s) => s.url === target.url)) t.match(target, { state: 'healthy', ejections: 0 }, `healthy ${target.url} was not ejected`)
  }
}

async function gatewayFor (t: Test, services: Service[], pool: Partial<PoolInput> = {}): Promise<Gateway> {
  return await startGateway(t, {
    pools: { p: { targets: services.map((s) => s.url), timeouts: { headers: HEADERS_TIMEOUT, body: HEADERS_TIMEOUT }, ...pool } },
    routes: [{ prefix: '/p', pool: 'p' }],
    errors: { expose: 'full' }
  })
}

t.test('kill a target: GETs retried elsewhere, no client error, the dead target ejected', async (t) => {
  const services = [await service(t), await service(t), await service(t)]
  const gw = await gatewayFor(t, services)
  const run = await underLoad(gw, async () => { await services[0]!.close() })
  checkRun(t, gw, run, services.slice(1))
  t.equal(run.failedAnswers, 0, 'with the default retries, nothing reached a client')
  await waitFor(() => gw.app.upstream.pool('p').targets()[0]!.state === 'ejected', WAIT, 'the dead target to be ejected')
})

t.test('a target hangs: its requests get 504 within timeouts.headers, it is ejected, the others serve', async (t) => {
  const services = [await service(t), await service(t), await service(t)]
  const gw = await gatewayFor(t, services)
  const run = await underLoad(gw, () => { services[0]!.mode = 'hang' })
  checkRun(t, gw, run, services.slice(1))
  t.ok(run.gatewayErrors > 0, 'some requests met the hanging target')
  t.ok(gw.failures().every((r) => r.error === 'http_response_timeout'), 'each classified as a headers timeout')
  t.equal(gw.app.upstream.pool('p').targets()[0]!.state, 'ejected')
})

t.test('a target resets mid-body: those clients are cut, each logged once, the others serve', async (t) => {
  const services = [await service(t), await service(t), await service(t)]
  const gw = await gatewayFor(t, services)
  const run = await underLoad(gw, () => { services[0]!.mode = 'reset-mid-body' })
  checkRun(t, gw, run, services.slice(1))
  t.ok(run.cut > 0, 'some responses were cut')
  t.ok(gw.failures().every((r) => r.error === 'http_response_incomplete' && r.status === 200 && r.level === 50), 'each logged as a cut 200 at error')
})

t.test('150 clients that never read a large answer hold their connections: steady load is still served, nobody is blamed', async (t) => {
  const services = [await service(t), await service(t), await service(t)]
  const gw = await gatewayFor(t, services)
  const { port } = new URL(gw.url)
  const stuck: net.Socket[] = []
  t.teardown(() => { for (const socket of stuck) socket.destroy() })
  // They come first and settle (every buffer on the way full), then the load runs beside them:
  // filling 150 pipes of kernel buffers takes the machine a moment, which is not the gateway's.
  const heapBefore = process.memoryUsage().heapUsed
  for (let i = 0; i < 150; i++) {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /p/big HTTP/1.1\r\nHost: gw\r\n\r\n'))
    socket.on('error', () => {})
    socket.pause()
    stuck.push(socket)
  }
  const inFlight = (): number => gw.app.upstream.pool('p').targets().reduce((sum, target) => sum + target.inFlight, 0)
  await waitFor(() => inFlight() === 150, WAIT, 'the never-reading clients to hold their requests')
  // Backpressure holds: endless answers to clients that read nothing, and the heap grows by
  // little more than a stream buffer each (the rest waits in the upstream, unsent).
  const grown = (process.memoryUsage().heapUsed - heapBefore) / (1024 * 1024)
  t.ok(grown < 64, `heap grew ${grown.toFixed(1)} MB for 150 endless answers nobody reads`)
  const run = await underLoad(gw, () => {})
  checkRun(t, gw, run, services)
  t.equal(run.failedAnswers, 0)
  t.equal(inFlight(), 150, 'the never-reading clients still hold their upstream requests, and nothing waited behind them')
})

t.test('the queue fills: excess requests get 503 connection_limit_reached, blamed on the gateway, nobody ejected', async (t) => {
  const services = [await service(t), await service(t)]
  for (const s of services) s.mode = 'slow'
  const gw = await gatewayFor(t, services, { limits: { maxConcurrent: 2, maxPending: 2, queueTimeout: 200 } })
  const run = await underLoad(gw, () => {})
  checkRun(t, gw, run, services)
  t.ok(run.gatewayErrors > 0, 'some requests were turned away')
  t.ok(gw.failures().every((r) => r.error === 'connection_limit_reached' && r.blame === 'gateway'), 'each as connection_limit_reached')
})
