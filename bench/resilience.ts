// `npm run bench:resilience`: how the gateway behaves when upstreams misbehave, in one run.
//
//   kill    3 targets under steady GET load; one is SIGKILLed mid-run. Client-visible errors
//           with retries off (the baseline) and with the default options, and the time from
//           the kill to ejection.
//   slow    one of 3 targets answers 200 ms late: p50/p99 with round-robin, least-request and
//           p2c-ewma, against the p99 of the same pool with no slow target.
//   budget  every target answers 503 and retries are on for 5xx: upstream requests per client
//           request with the retry budget and without it.
//
// Process layout: each upstream is a child process of its own (so one can be SIGKILLed); the
// gateway and autocannon share this process, which lets the bench watch target states and
// count tries through app.upstream. Latencies therefore include some load-generator time; the
// comparisons that matter are between variants measured alike in the same run.
import { createServer } from 'node:http'
import type { ChildProcess } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import autocannon from 'autocannon'
import Fastify, { type FastifyInstance } from 'fastify'
import upstream, { type PoolInput } from 'fastify-upstream'
import {
  HOST, WARMUP_SECONDS, serveAsChild, startChild, startWatchdog, runMain, positiveInteger,
  formatTable, writeResults
} from './harness.js'

const CONNECTIONS = positiveInteger('BENCH_CONNECTIONS', 20)
const SECONDS = positiveInteger('BENCH_DURATION', 5)

// ---------------------------------------------------------------------------------------------
// Child: one upstream, answering after DELAY_MS with STATUS.

async function runUpstreamChild (): Promise<void> {
  const delay = Number(process.env.DELAY_MS ?? 0)
  const status = Number(process.env.STATUS ?? 200)
  const body = JSON.stringify({ ok: status < 400 })
  const server = createServer((_request, response) => {
    const answer = (): void => {
      response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      response.end(body)
    }
    if (delay > 0) setTimeout(answer, delay)
    else answer()
  })
  server.keepAliveTimeout = 10_000
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
  serveAsChild([(server.address() as AddressInfo).port], async () => {
    await new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections() })
  })
}

// ---------------------------------------------------------------------------------------------
// Parent.

interface Upstream { child: ChildProcess, url: string }

async function upstreams (specs: Array<{ delayMs?: number, status?: number }>): Promise<Upstream[]> {
  return await Promise.all(specs.map(async (spec) => {
    const { child, ports } = await startChild(import.meta.url, 'upstream', { DELAY_MS: String(spec.delayMs ?? 0), STATUS: String(spec.status ?? 200) })
    return { child, url: `http://${HOST}:${ports[0]!}` }
  }))
}

async function stop (list: Upstream[]): Promise<void> {
  await Promise.all(list.map(async ({ child }) => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGTERM')
    await exited
  }))
}

async function gateway (pool: PoolInput): Promise<{ app: FastifyInstance, url: string }> {
  const app = Fastify({ logger: false })
  await app.register(upstream, { pools: { p: pool }, routes: [{ prefix: '/p', pool: 'p' }], errors: { expose: 'full' } })
  await app.listen({ port: 0, host: HOST })
  return { app, url: `http://${HOST}:${(app.server.address() as AddressInfo).port}/p/x` }
}

async function load (url: string, options: { seconds?: number, amount?: number, connections?: number }): Promise<autocannon.Result> {
  return await autocannon({
    url,
    connections: options.connections ?? CONNECTIONS,
    ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.seconds ?? SECONDS })
  })
}

const failed = (r: autocannon.Result): number => r.errors + r.timeouts + r.non2xx

interface KillResult { retries: string, requests: number, clientErrors: number, killToEjectionMs: number | null }

async function kill (retriesOn: boolean): Promise<KillResult> {
  const list = await upstreams([{}, {}, {}])
  // On: the defaults, nothing set (retry.on includes reset for idempotent methods).
  const { app, url } = await gateway({ targets: list.map((u) => u.url), ...(retriesOn ? {} : { retry: { retries: 0 } }) })
  try {
    await load(url, { seconds: WARMUP_SECONDS })
    const seconds = Math.max(4, SECONDS)
    const run = load(url, { seconds })
    await new Promise((resolve) => setTimeout(resolve, (seconds * 1000) / 3))
    const victim = list[0]!
    const killedAt = performance.now()
    victim.child.kill('SIGKILL')
    let ejectedAt: number | null = null
    while (ejectedAt === null && performance.now() - killedAt < seconds * 1000) {
      if (app.upstream.pool('p').targets()[0]!.state === 'ejected') ejectedAt = performance.now()
      else await new Promise((resolve) => setTimeout(resolve, 2))
    }
    const result = await run
    return {
      retries: retriesOn ? 'default options' : 'off',
      requests: result.requests.total,
      clientErrors: failed(result),
      killToEjectionMs: ejectedAt === null ? null : Math.round(ejectedAt - killedAt)
    }
  } finally {
    await app.close()
    await stop(list)
  }
}

interface SlowResult { variant: string, requests: number, p50: number, p99: number, slowShare: number, errors: number }

async function slow (variant: string, balancer: 'round-robin' | 'least-request' | 'p2c-ewma', slowMs: number): Promise<SlowResult> {
  const list = await upstreams([{ delayMs: slowMs }, {}, {}])
  const { app, url } = await gateway({ targets: list.map((u) => u.url), balancer })
  try {
    await load(url, { seconds: WARMUP_SECONDS })
    const before = app.upstream.pool('p').targets().map((t) => t.requests)
    const result = await load(url, { seconds: SECONDS })
    const after = app.upstream.pool('p').targets().map((t) => t.requests)
    const served = after.map((n, i) => n - before[i]!)
    return {
      variant,
      requests: result.requests.total,
      p50: result.latency.p50,
      p99: result.latency.p99,
      slowShare: served[0]! / Math.max(1, served.reduce((a, b) => a + b, 0)),
      errors: failed(result)
    }
  } finally {
    await app.close()
    await stop(list)
  }
}

interface BudgetResult { budget: string, clientRequests: number, upstreamRequests: number, perClientRequest: number }

async function budget (withBudget: boolean): Promise<BudgetResult> {
  const list = await upstreams([{ status: 503 }, { status: 503 }, { status: 503 }])
  const { app, url } = await gateway({
    targets: list.map((u) => u.url),
    outlier: false,
    retry: { retries: 2, on: ['5xx'], budget: withBudget ? { ratio: 0.2, minPerSecond: 5 } : { ratio: 1, minPerSecond: 1_000_000 } }
  })
  try {
    const amount = 3000
    const result = await load(url, { amount })
    const tries = app.upstream.pool('p').targets().reduce((sum, t) => sum + t.requests, 0)
    return {
      budget: withBudget ? 'ratio 0.2, min 5/s (default)' : 'none',
      clientRequests: result.requests.total,
      upstreamRequests: tries,
      perClientRequest: Math.round((tries / Math.max(1, result.requests.total)) * 100) / 100
    }
  } finally {
    await app.close()
    await stop(list)
  }
}

async function main (): Promise<void> {
  startWatchdog((SECONDS + WARMUP_SECONDS) * 1000 * 12 + 120_000)
  console.log(`fastify-upstream resilience bench: ${CONNECTIONS} connections, ${SECONDS} s per run\n`)

  const kills = [await kill(false), await kill(true)]
  console.log('kill: one of 3 targets SIGKILLed under GET load')
  console.log(formatTable([
    ['retries', 'requests', 'client errors', 'kill → ejection ms'],
    ...kills.map((k) => [k.retries, String(k.requests), String(k.clientErrors), k.killToEjectionMs === null ? 'never' : String(k.killToEjectionMs)])
  ]))

  const healthy = await slow('all healthy (round-robin)', 'round-robin', 0)
  const slows = [healthy, await slow('round-robin', 'round-robin', 200), await slow('least-request', 'least-request', 200), await slow('p2c-ewma', 'p2c-ewma', 200)]
  const p2c = slows[3]!
  const ratio = p2c.p99 / Math.max(1, healthy.p99)
  console.log('\nslow: one of 3 targets answers 200 ms late')
  console.log(formatTable([
    ['variant', 'requests', 'p50 ms', 'p99 ms', 'slow share', 'errors'],
    ...slows.map((s) => [s.variant, String(s.requests), String(s.p50), String(s.p99), `${(s.slowShare * 100).toFixed(1)}%`, String(s.errors)])
  ]))
  console.log(`p2c-ewma p99 / all-healthy p99 = ${ratio.toFixed(2)} (goal ≤ 1.5: ${ratio <= 1.5 ? 'PASS' : 'BELOW'})`)

  const budgets = [await budget(false), await budget(true)]
  console.log('\nbudget: every target answers 503; retries on 5xx, 2 retries')
  console.log(formatTable([
    ['budget', 'client requests', 'upstream requests', 'per client request'],
    ...budgets.map((b) => [b.budget, String(b.clientRequests), String(b.upstreamRequests), String(b.perClientRequest)])
  ]))

  const path = await writeResults('resilience-latest.json', { connections: CONNECTIONS, seconds: SECONDS, kills, slows, p2cP99Ratio: ratio, budgets })
  console.log(`\nresults: ${path}`)
}

if (process.argv[2] === 'upstream') {
  await runUpstreamChild()
} else {
  await runMain(main)
}
