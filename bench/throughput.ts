// Throughput and latency of fastify-upstream against its peers, on one machine, over loopback:
//
//   direct            autocannon → upstream A
//   http-proxy        autocannon → bare @fastify/http-proxy → upstream A
//   fastify-upstream  autocannon → fastify-upstream (round-robin pool) → upstreams A and B
//   fastify-upstream-off  the same gateway with `metrics: false, status: false`: the ratio of the
//                     two is what rolling stats and metrics cost on the success path
//
// Run with `npm run bench`. Knobs (environment): BENCH_DURATION seconds per measurement [5],
// BENCH_CONNECTIONS concurrent connections [50], BENCH_ROUNDS repeats of the whole round [2].
// Prints a table of medians across rounds and writes bench/results/throughput-latest.json.
//
// Two figures compare the proxies: req/s, which moves with whatever else the shared machine is
// doing, and the CPU time each proxy process spends per response, which moves much less.
//
// Process layout, and why: autocannon runs here, in the parent; each server runs in a child
// process started from this same file (see `role` below). In one process the load generator
// and the server under test would share one event loop and one core, so every variant would
// measure mostly autocannon. On this 2-core machine, separate processes let the OS spread the
// work. Both upstreams share one child so that the upstream side has the same CPU budget in
// every variant (fastify-upstream spreads over A and B; with one process per upstream it would
// get more upstream CPU than the single-upstream variants, which flatters it). The children,
// the upstreams and the parent's plumbing are in harness.ts, shared with failure-storm.ts.
import os from 'node:os'
import autocannon from 'autocannon'
import type { ChildProcess } from 'node:child_process'
import {
  HOST, WARMUP_SECONDS, ask, formatTable, getBody, median, meterResponses, portOf, positiveInteger, closeServers,
  runMain, runUpstreams, serveAsChild, startChild, startWatchdog, writeResults, type CpuReport
} from './harness.js'

const PREFIX = '/svc'

type Role = 'upstreams' | 'http-proxy' | 'fastify-upstream' | 'fastify-upstream-off'
type Variant = 'direct' | 'http-proxy' | 'fastify-upstream' | 'fastify-upstream-off'
const VARIANTS: Variant[] = ['direct', 'http-proxy', 'fastify-upstream', 'fastify-upstream-off']

// ---------------------------------------------------------------------------------------------
// Children: the servers.

/** The front doors import fastify lazily: the upstream child never needs it. */
async function runFrontDoor (role: Exclude<Role, 'upstreams'>, upstreamPorts: number[]): Promise<{ port: number, close: () => Promise<void> }> {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  if (role === 'http-proxy') {
    const { default: httpProxy } = await import('@fastify/http-proxy')
    await app.register(httpProxy, { upstream: `http://${HOST}:${upstreamPorts[0]}`, prefix: PREFIX })
  } else {
    const { default: upstream } = await import('fastify-upstream')
    await app.register(upstream, {
      pools: { svc: { targets: upstreamPorts.map((port) => `http://${HOST}:${port}`), balancer: 'round-robin' } },
      routes: [{ prefix: PREFIX, pool: 'svc' }],
      ...(role === 'fastify-upstream-off' ? { metrics: false, status: false } : {})
    })
  }
  await app.listen({ port: 0, host: HOST })
  meterResponses(app.server)
  return { port: portOf(app.server), close: async () => { await app.close() } }
}

async function runChild (role: Role): Promise<void> {
  let close: () => Promise<void>
  let ports: number[]
  if (role === 'upstreams') {
    // Two plain node:http upstreams in one process; each names itself so round-robin can be seen.
    const servers = await runUpstreams(['a', 'b'])
    ports = servers.map(portOf)
    close = async () => { await closeServers(servers) }
  } else {
    const upstreamPorts = (process.env.BENCH_UPSTREAM_PORTS ?? '').split(',').map(Number)
    const door = await runFrontDoor(role, upstreamPorts)
    ports = [door.port]
    close = door.close
  }
  serveAsChild(ports, close)
}

// ---------------------------------------------------------------------------------------------
// Parent: start the children, drive the load, report.

/** Starts this file again in a child process as `role` and waits for the ports it listens on. */
async function startRole (role: Role, env: Record<string, string> = {}): Promise<{ child: ChildProcess, ports: number[] }> {
  return await startChild(import.meta.url, role, env)
}

interface Sample {
  requestsPerSecond: number
  p50: number
  p99: number
  total: number
  errors: number
  timeouts: number
  non2xx: number
  /** CPU time of the proxy process per response, in µs (null for direct: no proxy). */
  cpuPerResponse: number | null
}

/** Any of these means the numbers describe failures, not a proxy: the run must fail. */
function problems (result: autocannon.Result): number {
  return result.errors + result.timeouts + result.non2xx + result.mismatches + result.resets
}

async function measure (variant: Variant, url: string, seconds: number, connections: number): Promise<autocannon.Result> {
  const result = await autocannon({ url, connections, duration: seconds, title: variant })
  if (problems(result) > 0 || result['2xx'] === 0) {
    throw new Error(`${variant}: ${result['2xx']} responses 2xx, ${result.errors} errors (${result.timeouts} timeouts), ` +
      `${result.non2xx} non-2xx, ${result.mismatches} mismatches, ${result.resets} resets in ${seconds} s on ${url}`)
  }
  return result
}

async function main (): Promise<void> {
  const duration = positiveInteger('BENCH_DURATION', 5)
  const connections = positiveInteger('BENCH_CONNECTIONS', 50)
  const rounds = positiveInteger('BENCH_ROUNDS', 2)

  startWatchdog(rounds * VARIANTS.length * (duration + WARMUP_SECONDS + 5) * 1000 + 60_000)

  const { ports: upstreamPorts } = await startRole('upstreams')
  const env = { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') }
  const [proxy, gateway, bare] = await Promise.all([startRole('http-proxy', env), startRole('fastify-upstream', env), startRole('fastify-upstream-off', env)])
  const proxyPort = proxy.ports[0]
  const upstreamPort = gateway.ports[0]
  const meters: Record<Variant, ChildProcess | null> = { direct: null, 'http-proxy': proxy.child, 'fastify-upstream': gateway.child, 'fastify-upstream-off': bare.child }
  const urls: Record<Variant, string> = {
    direct: `http://${HOST}:${upstreamPorts[0]}/hello`,
    'http-proxy': `http://${HOST}:${proxyPort}${PREFIX}/hello`,
    'fastify-upstream': `http://${HOST}:${upstreamPort}${PREFIX}/hello`,
    'fastify-upstream-off': `http://${HOST}:${bare.ports[0]}${PREFIX}/hello`
  }

  // Sanity check: every door answers 200, and fastify-upstream really alternates between A and B
  // (otherwise its figures would describe a one-target pool).
  const seen = new Set<string>()
  for (const variant of VARIANTS) {
    for (let i = 0; i < 2; i++) {
      const { status, body } = await getBody(urls[variant])
      if (status !== 200) throw new Error(`${variant}: GET ${urls[variant]} answered ${status}: ${body}`)
      if (variant === 'fastify-upstream') seen.add((JSON.parse(body) as { upstream: string }).upstream)
    }
  }
  if (seen.size !== 2) throw new Error(`fastify-upstream: two requests reached ${[...seen].join(', ')}, expected upstreams a and b`)

  console.log(`bench: ${rounds} round(s) of ${VARIANTS.join(' → ')}, ${duration} s each after ${WARMUP_SECONDS} s warm-up, ` +
    `${connections} connections, node ${process.version}, ${os.cpus().length} CPU(s)`)
  const samples: Record<Variant, Sample[]> = { direct: [], 'http-proxy': [], 'fastify-upstream': [], 'fastify-upstream-off': [] }
  for (let round = 1; round <= rounds; round++) {
    for (const variant of VARIANTS) {
      // Warm-up: JIT, keep-alive pools and connection setup happen here, not in the figures.
      await measure(variant, urls[variant], WARMUP_SECONDS, connections)
      const meter = meters[variant]
      if (meter !== null) await ask(meter, { cmd: 'reset' })
      const result = await measure(variant, urls[variant], duration, connections)
      const cpu = meter === null ? null : await ask<CpuReport>(meter, { cmd: 'report' })
      const sample: Sample = {
        requestsPerSecond: result.requests.average,
        p50: result.latency.p50,
        p99: result.latency.p99,
        total: result.requests.total,
        errors: result.errors,
        timeouts: result.timeouts,
        non2xx: result.non2xx,
        cpuPerResponse: cpu?.cpuPerResponse ?? null
      }
      samples[variant].push(sample)
      console.log(`  round ${round}/${rounds} ${variant.padEnd(16)} ${Math.round(sample.requestsPerSecond)} req/s, p50 ${sample.p50} ms, p99 ${sample.p99} ms` +
        (sample.cpuPerResponse === null ? '' : `, ${Math.round(sample.cpuPerResponse)} µs CPU/response`))
    }
  }

  // Medians per variant, each figure on its own: the shared machine makes single runs noisy.
  const medians = Object.fromEntries(VARIANTS.map((variant) => {
    const list = samples[variant]
    return [variant, {
      requestsPerSecond: median(list.map((s) => s.requestsPerSecond)),
      p50: median(list.map((s) => s.p50)),
      p99: median(list.map((s) => s.p99)),
      errors: list.reduce((sum, s) => sum + s.errors, 0),
      non2xx: list.reduce((sum, s) => sum + s.non2xx, 0),
      cpuPerResponse: meters[variant] === null ? null : median(list.map((s) => s.cpuPerResponse ?? 0))
    }]
  })) as Record<Variant, { requestsPerSecond: number, p50: number, p99: number, errors: number, non2xx: number, cpuPerResponse: number | null }>
  const rps = (variant: Variant): number => medians[variant].requestsPerSecond
  const ratios = {
    'fastify-upstream/direct': rps('fastify-upstream') / rps('direct'),
    'fastify-upstream/http-proxy': rps('fastify-upstream') / rps('http-proxy'),
    'http-proxy/direct': rps('http-proxy') / rps('direct'),
    // Below 1 by what metrics and rolling stats cost per response.
    'fastify-upstream/fastify-upstream-off': rps('fastify-upstream') / rps('fastify-upstream-off')
  }
  const cpu = (variant: Variant): number => medians[variant].cpuPerResponse ?? NaN
  const cpuRatio = cpu('fastify-upstream') / cpu('http-proxy')
  const observeCpuRatio = cpu('fastify-upstream') / cpu('fastify-upstream-off')

  console.log(`\nMedian of ${rounds} round(s), ${duration} s each, ${connections} connections:\n`)
  console.log(formatTable([
    ['variant', 'req/s', 'p50 ms', 'p99 ms', 'CPU µs/resp', 'errors', 'non-2xx'],
    ...VARIANTS.map((variant) => {
      const m = medians[variant]
      return [variant, Math.round(m.requestsPerSecond).toString(), m.p50.toFixed(1), m.p99.toFixed(1),
        m.cpuPerResponse === null ? '-' : Math.round(m.cpuPerResponse).toString(), String(m.errors), String(m.non2xx)]
    })
  ]))
  console.log('\nThroughput ratios (req/s):')
  for (const [name, value] of Object.entries(ratios)) console.log(`  ${name.padEnd(28)} ${value.toFixed(2)}`)
  console.log(`CPU per response, fastify-upstream/http-proxy: ${cpuRatio.toFixed(2)} (lower is cheaper)`)
  console.log(`CPU per response, fastify-upstream/fastify-upstream-off (metrics and stats on/off): ${observeCpuRatio.toFixed(2)}`)

  const report = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpus: os.cpus().length,
    settings: { duration, warmup: WARMUP_SECONDS, connections, rounds },
    medians,
    ratios,
    cpuPerResponseRatio: { 'fastify-upstream/http-proxy': cpuRatio, 'fastify-upstream/fastify-upstream-off': observeCpuRatio },
    rounds: samples
  }
  console.log(`\nwrote ${await writeResults('throughput-latest.json', report)}`)
}

const role = process.argv[2] as Role | undefined
if (role !== undefined) {
  await runChild(role)
} else {
  await runMain(main)
}
