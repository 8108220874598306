// Timeouts: how close to `timeouts.headers` a client gets its 504 when the upstream hangs.
//
//   baseline          client → an upstream that answers after exactly 500 ms (a timer): what a
//                     500 ms timer costs on this machine at this moment, with no proxy
//   via gateway       client → fastify-upstream → the 500 ms upstream: the same plus the gateway's
//                     hops, so the 504's lateness can be told apart from the path's
//   headers 500 ms    client → fastify-upstream, timeouts.headers 500 → an upstream that accepts
//                     the request and never answers: the time to the 504
//
// Ratios: the 504 against the 500 ms answer through the gateway (same path, so what is left is
// the timer's own lateness), that against the bare timer. The goal is a 504 within +50 ms of 500. Retries and outlier detection are off for this pool so
// that every request waits out its own timer (with them on, the hanging target would soon be
// ejected and later requests answered at once). The client keeps CONCURRENCY requests in flight,
// on keep-alive connections, and times each from its start to its last byte.
import { Agent, createServer, request, type Server } from 'node:http'
import { performance } from 'node:perf_hooks'
import {
  HOST, closeServers, figure, portOf, serveAsChild, startChild,
  scenarioEntry, type Figure, type Settings
} from './harness.js'

const TIMEOUT_MS = 500
const CONCURRENCY = 20
const GOAL_MS = 50

async function runChild (role: string): Promise<void> {
  if (role === 'upstreams') {
    // [0] never answers (the request is read, the response never started); [1] answers after TIMEOUT_MS.
    const hanging = createServer(() => {})
    const timed = createServer((_request, response) => {
      setTimeout(() => { response.writeHead(200, { 'content-length': 2 }); response.end('ok') }, TIMEOUT_MS)
    })
    const servers: Server[] = [hanging, timed]
    for (const server of servers) server.keepAliveTimeout = 10_000
    await Promise.all(servers.map(async (server) => await new Promise<void>((resolve) => server.listen(0, HOST, resolve))))
    serveAsChild(servers.map(portOf), async () => { await closeServers(servers) })
    return
  }
  const { default: Fastify } = await import('fastify')
  const { default: upstream } = await import('fastify-upstream')
  const app = Fastify({ logger: false })
  await app.register(upstream, {
    pools: {
      hang: { targets: [`http://${HOST}:${process.env.BENCH_HANGING_PORT ?? ''}`], timeouts: { headers: TIMEOUT_MS }, outlier: false, retry: { retries: 0 } },
      timed: { targets: [`http://${HOST}:${process.env.BENCH_TIMED_PORT ?? ''}`], outlier: false, retry: { retries: 0 } }
    },
    routes: [{ prefix: '/hang', pool: 'hang' }, { prefix: '/timed', pool: 'timed' }]
  })
  await app.listen({ port: 0, host: HOST })
  serveAsChild([portOf(app.server)], async () => { await app.close() })
}

/** `count` GETs, CONCURRENCY at a time; each one's time from start to the end of its body, in ms. */
async function timeRequests (url: string, count: number, expectedStatus: number): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  const times: number[] = []
  const one = async (): Promise<void> => {
    const started = performance.now()
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(url, { agent, timeout: 10_000 }, (response) => {
        response.resume()
        response.on('end', () => { resolve(response.statusCode ?? 0) })
        response.on('error', reject)
      })
      req.on('timeout', () => { req.destroy(new Error(`GET ${url}: no answer in 10 s`)) })
      req.on('error', reject)
      req.end()
    })
    if (status !== expectedStatus) throw new Error(`timeouts: GET ${url} answered ${status}, expected ${expectedStatus}`)
    times.push(performance.now() - started)
  }
  try {
    let next = 0
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) {
        next++
        await one()
      }
    }))
  } finally {
    agent.destroy()
  }
  return times
}

function percentile (values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

interface TimeSample { p50: number, p99: number, max: number, requests: number }

export async function timeouts (settings: Settings): Promise<{ figures: Figure[], detail: Record<string, TimeSample[]> }> {
  const { ports: [hangingPort, timedPort] } = await startChild(import.meta.url, 'upstreams')
  const { ports: [gatewayPort] } = await startChild(import.meta.url, 'gateway', { BENCH_HANGING_PORT: String(hangingPort), BENCH_TIMED_PORT: String(timedPort) })
  // [name, url, status, baseline]: the 504 against a 500 ms answer on the same path, that
  // against the bare timer.
  const timer = 'baseline: 500 ms timer, direct'
  const viaGateway = '500 ms upstream via the gateway'
  const hanging = `headers ${TIMEOUT_MS} ms, hanging upstream`
  const variants: Array<[string, string, number, string | undefined]> = [
    [timer, `http://${HOST}:${timedPort!}/x`, 200, undefined],
    [viaGateway, `http://${HOST}:${gatewayPort!}/timed/x`, 200, timer],
    [hanging, `http://${HOST}:${gatewayPort!}/hang/x`, 504, viaGateway]
  ]
  const count = settings.quick ? 40 : 100
  const samples: Record<string, TimeSample[]> = Object.fromEntries(variants.map(([name]) => [name, []]))
  // Warm-up: connections and JIT.
  for (const [, url, status] of variants) await timeRequests(url, CONCURRENCY, status)
  for (let round = 1; round <= settings.rounds; round++) {
    for (const [name, url, status] of variants) {
      const times = await timeRequests(url, count, status)
      const sample = { p50: percentile(times, 50), p99: percentile(times, 99), max: Math.max(...times), requests: times.length }
      samples[name]!.push(sample)
      console.log(`  timeouts round ${round}/${settings.rounds} ${name.padEnd(32)} p50 ${sample.p50.toFixed(1)} ms, p99 ${sample.p99.toFixed(1)} ms, max ${sample.max.toFixed(1)} ms (${count} requests)`)
    }
  }
  const figures: Figure[] = []
  for (const [name, , , baseline] of variants) {
    for (const stat of ['p50', 'p99', 'max'] as const) {
      figures.push(figure('timeouts', name, `time to answer ${stat}`, 'ms', samples[name]!.map((s) => s[stat]),
        baseline === undefined ? undefined : { name: baseline, values: samples[baseline]!.map((s) => s[stat]) }))
    }
  }
  const p99 = figures.find((f) => f.variant === hanging && f.metric === 'time to answer p99')!.value.median
  console.log(`  time to 504, p99: ${p99.toFixed(1)} ms (goal ≤ ${TIMEOUT_MS + GOAL_MS}: ${p99 <= TIMEOUT_MS + GOAL_MS ? 'PASS' : 'ABOVE'})`)
  return { figures, detail: samples }
}

await scenarioEntry(import.meta.url, 'timeouts', runChild)
