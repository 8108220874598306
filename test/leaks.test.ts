// Nothing is lost when upstreams fail: after a burst of requests against each kind of fault,
// every request and reply object can be garbage-collected (no timer, listener, queue or map
// still holds one), no target counts a request in flight, and no timer is left running.
import t from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Readable } from 'node:stream'
import { Agent, request } from 'undici'
import { startGateway, waitFor } from './helpers/gateway.js'
import { startUpstream, startTcp, startRefusing, type Running } from './helpers/servers.js'
import type { UpstreamOptions } from '../lib/index.js'
import { childEnv } from './helpers/child.js'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

const REQUESTS = 30
// Bounds for conditions (nothing in flight, everything collected, the storm child done): a
// passing wait returns as soon as its condition holds, so only a loaded machine uses the margin.
const WAIT = 30_000
const STORM_LIMIT = 240_000
// The storm child alone takes ~15 s on a quiet machine and four times that on a busy one.
t.setTimeout(STORM_LIMIT + 120_000)
const CONCURRENCY = 10

interface Scenario {
  name: string
  /** The pool under test; `servers` are closed after the scenario. */
  pool: () => Promise<{ pool: UpstreamOptions['pools'][string], servers: Running[] }>
  /** Options of each request (body, abort). */
  send?: () => Parameters<typeof request>[1]
  /**
   * What every request must end as: a status, or 'error' for a cut or aborted exchange; a list
   * when the burst is meant to split (each listed outcome seen, nothing else).
   */
  outcome: number | 'error' | ReadonlyArray<number | 'error'>
}

const tcp = async (onSocket: Parameters<typeof startTcp>[0]): Promise<{ url: string, servers: Running[] }> => {
  const server = await startTcp(onSocket)
  return { url: server.url, servers: [server] }
}

// Passive ejection is off in each pool: after five failures it would turn the rest of the
// burst into 503s at once, and each fault is meant to be met by every request.
const scenarios: Scenario[] = [
  {
    name: 'refused',
    pool: async () => {
      const refusing = await startRefusing()
      return { pool: { targets: [refusing.url], outlier: false }, servers: [refusing] }
    },
    outcome: 502
  },
  {
    name: 'reset before headers',
    pool: async () => {
      const { url, servers } = await tcp((socket) => { socket.once('data', () => socket.destroy()) })
      return { pool: { targets: [url], retry: { retries: 0 }, outlier: false }, servers }
    },
    outcome: 502
  },
  {
    name: 'headers timeout',
    pool: async () => {
      const { url, servers } = await tcp(() => {})
      return { pool: { targets: [url], timeouts: { headers: 150 }, outlier: false }, servers }
    },
    outcome: 504
  },
  {
    name: 'garbage instead of HTTP',
    pool: async () => {
      const { url, servers } = await tcp((socket) => { socket.once('data', () => socket.end('garbage\r\n\r\n')) })
      return { pool: { targets: [url], outlier: false }, servers }
    },
    outcome: 502
  },
  {
    name: 'reset mid-body',
    pool: async () => {
      const u = await startUpstream('cut', (_req, res) => {
        res.writeHead(200, { 'content-length': '1000' })
        res.write('partial')
        setTimeout(() => res.destroy(), 10)
      })
      return { pool: { targets: [u.url], outlier: false }, servers: [u] }
    },
    outcome: 'error'
  },
  {
    name: 'body stall',
    pool: async () => {
      const u = await startUpstream('stall', (_req, res) => {
        res.writeHead(200, { 'content-length': '1000' })
        res.write('partial')
      })
      return { pool: { targets: [u.url], timeouts: { body: 150 }, outlier: false }, servers: [u] }
    },
    outcome: 'error'
  },
  {
    name: 'client aborts while the upstream hangs',
    pool: async () => {
      const { url, servers } = await tcp(() => {})
      return { pool: { targets: [url], outlier: false }, servers }
    },
    send: () => ({ signal: AbortSignal.timeout(100) }),
    outcome: 'error'
  },
  {
    name: 'retried onto a healthy target',
    pool: async () => {
      const u = await startUpstream('ok')
      const refusing = await startRefusing()
      // A budget that covers the burst: half of it is retried at once.
      return { pool: { targets: [refusing.url, u.url], outlier: false, retry: { budget: { ratio: 1, minPerSecond: 100 } } }, servers: [u, refusing] }
    },
    outcome: 200
  },
  {
    name: 'queue timeout',
    pool: async () => {
      const u = await startUpstream('slow', (_req, res) => { setTimeout(() => res.end('late'), 100) })
      return { pool: { targets: [u.url], limits: { maxConcurrent: 1, queueTimeout: 30 } }, servers: [u] }
    },
    // One request at a time is served (100 ms); of the ten sent at once, the nine waiting in
    // line give up after 30 ms, long before the one served ends: some 200s, some 503s.
    outcome: [200, 503]
  },
  {
    name: 'chunked body over bodyLimit, cut mid-stream',
    pool: async () => {
      const u = await startUpstream('sink', (req, res) => { req.resume(); req.on('end', () => res.end('whole')) })
      return { pool: { targets: [u.url] }, servers: [u] }
    },
    send: () => ({ method: 'POST', body: Readable.from((function * () { for (let i = 0; i < 32; i++) yield Buffer.alloc(16 * 1024) })()) }),
    outcome: 413
  }
]

const timers = (): number => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length

for (const scenario of scenarios) {
  t.test(`${scenario.name}: ${REQUESTS} requests leave nothing behind`, async (t) => {
    const { pool, servers } = await scenario.pool()
    t.teardown(async () => { for (const server of servers) await server.close() })
    const alive: Array<WeakRef<object>> = []
    const gw = await startGateway(t, { pools: { p: pool }, routes: [{ prefix: '/p', pool: 'p', bodyLimit: 100 * 1024 }] }, {}, (app) => {
      app.addHook('onRequest', (req, reply, done) => {
        alive.push(new WeakRef(req), new WeakRef(reply))
        done()
      })
    })
    const timersBefore = timers()
    const client = new Agent({ keepAliveTimeout: 500 })
    const outcomes: Array<number | 'error'> = []
    let sent = 0
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (sent < REQUESTS) {
        sent++
        try {
          const res = await request(`${gw.url}/p/x`, { dispatcher: client, signal: AbortSignal.timeout(5000), ...scenario.send?.() })
          await res.body.text()
          outcomes.push(res.statusCode)
        } catch {
          outcomes.push('error')
        }
      }
    }))
    await client.close()
    t.equal(outcomes.length, REQUESTS)
    const seen = [...new Set(outcomes)].sort()
    const expected = Array.isArray(scenario.outcome) ? [...scenario.outcome].sort() : [scenario.outcome]
    t.same(seen, expected, `every request ended as ${expected.join(' or ')} (seen: ${seen.join(', ')})`)
    if (scenario.name === 'queue timeout') {
      const turnedAway = gw.failures()
      t.equal(turnedAway.length, outcomes.filter((o) => o === 503).length, 'one record per 503')
      t.ok(turnedAway.every((r) => r.error === 'connection_limit_reached' && r.phase === 'queue'), 'each 503 gave up waiting in line')
    }

    const inFlight = (): number[] => gw.app.upstream.pool('p').targets().map((target) => target.inFlight)
    await waitFor(() => inFlight().every((n) => n === 0), WAIT, 'no request in flight')
    t.same(inFlight(), inFlight().map(() => 0), 'no target counts a request in flight')

    // Collection can lag a few turns behind (sockets close, streams finish): retry a while.
    const deadline = Date.now() + WAIT
    let remaining = alive.length
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      gc()
      remaining = alive.filter((ref) => ref.deref() !== undefined).length
      if (remaining === 0) break
    }
    t.equal(remaining, 0, `all ${alive.length / 2} requests and their replies were collected`)
    t.ok(timers() <= timersBefore + 2, `timers: ${timersBefore} before, ${timers()} after`)
  })
}

t.test('10 000 mixed failures: the heap after GC and the handles return to where they were; close() leaves none', async (t) => {
  // A process of its own: a clean heap and handle count to compare against, and --expose-gc.
  const { spawn } = await import('node:child_process')
  const { fileURLToPath } = await import('node:url')
  const script = fileURLToPath(new URL('./fixtures/storm-child.ts', import.meta.url))
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', script, '10000'], { stdio: ['ignore', 'pipe', 'inherit'], env: childEnv() })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const killer = setTimeout(() => child.kill('SIGKILL'), STORM_LIMIT)
  const [code] = await new Promise<[number | null]>((resolve) => child.once('exit', (c) => resolve([c])))
  clearTimeout(killer)
  t.equal(code, 0, 'the process exited by itself')
  const report = JSON.parse(output.trim().split('\n').pop()!) as {
    statuses: Record<string, number>, ms: number, heapBefore: number, heapAfter: number, handlesBefore: number, handlesAfter: number, left: string[]
  }
  t.same(report.statuses, { 502: 10_000 }, `every request answered 502 (in ${report.ms} ms)`)
  // 5 MB over 10 000 requests is 500 bytes each: any per-request leak shows.
  const grown = report.heapAfter - report.heapBefore
  t.ok(grown < 5 * 1024 * 1024, `heap after GC grew by ${Math.round(grown / 1024)} KiB`)
  t.ok(report.handlesAfter <= report.handlesBefore + 2, `handles: ${report.handlesBefore} before, ${report.handlesAfter} after`)
  t.same(report.left, [], 'after close() no resource beyond those the process started with')
})
