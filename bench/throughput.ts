// Throughput and latency of fastify-upstream against its peers, on one machine, over loopback:
//
//   direct            autocannon → upstream A
//   http-proxy        autocannon → bare @fastify/http-proxy → upstream A
//   fastify-upstream  autocannon → fastify-upstream (round-robin pool) → upstreams A and B
//
// Run with `npm run bench`. Knobs (environment): BENCH_DURATION seconds per measurement [5],
// BENCH_CONNECTIONS concurrent connections [50], BENCH_ROUNDS repeats of the whole round [2].
// Prints a table of medians across rounds and writes bench/results/throughput-latest.json.
//
// Process layout, and why: autocannon runs here, in the parent; each server runs in a child
// process started from this same file (see `role` below). In one process the load generator
// and the server under test would share one event loop and one core, so every variant would
// measure mostly autocannon. On this 2-core machine, separate processes let the OS spread the
// work. Both upstreams share one child so that the upstream side has the same CPU budget in
// every variant (fastify-upstream spreads over A and B; with one process per upstream it would
// get more upstream CPU than the single-upstream variants, which flatters it).
import { fork, type ChildProcess } from 'node:child_process'
import { createServer, get, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdir, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import os from 'node:os'
import autocannon from 'autocannon'

const HOST = '127.0.0.1'
const PREFIX = '/svc'
/** How long a child may take to start listening, or to stop, before we give up on it. */
const CHILD_START_MS = 15_000
const CHILD_STOP_MS = 3_000
const WARMUP_SECONDS = 1

type Role = 'upstreams' | 'http-proxy' | 'fastify-upstream'
type Variant = 'direct' | 'http-proxy' | 'fastify-upstream'
const VARIANTS: Variant[] = ['direct', 'http-proxy', 'fastify-upstream']

/** What a child tells the parent once it listens. */
interface Ready { ports: number[] }

// ---------------------------------------------------------------------------------------------
// Children: the servers.

/** Two plain node:http upstreams in one process; each names itself so round-robin can be seen. */
async function runUpstreams (): Promise<Server[]> {
  const servers = ['a', 'b'].map((name) => {
    const body = JSON.stringify({ ok: true, upstream: name })
    const server = createServer((_request, response) => {
      // Content-Length, not chunked: keeps the upstream's share of the work small and fixed.
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      response.end(body)
    })
    // Longer than the proxies' idle keep-alive (undici's 4 s) so the proxy, not the upstream,
    // closes idle sockets: no request ever races a socket the upstream is closing.
    server.keepAliveTimeout = 10_000
    return server
  })
  await Promise.all(servers.map(async (server) => await new Promise<void>((resolve) => server.listen(0, HOST, resolve))))
  return servers
}

/** The front doors import fastify lazily: the upstream child never needs it. */
async function runFrontDoor (role: 'http-proxy' | 'fastify-upstream', upstreamPorts: number[]): Promise<{ port: number, close: () => Promise<void> }> {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  if (role === 'http-proxy') {
    const { default: httpProxy } = await import('@fastify/http-proxy')
    await app.register(httpProxy, { upstream: `http://${HOST}:${upstreamPorts[0]}`, prefix: PREFIX })
  } else {
    const { default: upstream } = await import('fastify-upstream')
    await app.register(upstream, {
      pools: { svc: { targets: upstreamPorts.map((port) => `http://${HOST}:${port}`), balancer: 'round-robin' } },
      routes: [{ prefix: PREFIX, pool: 'svc' }]
    })
  }
  await app.listen({ port: 0, host: HOST })
  return { port: (app.server.address() as AddressInfo).port, close: async () => { await app.close() } }
}

async function runChild (role: Role): Promise<void> {
  let close: () => Promise<void>
  let ports: number[]
  if (role === 'upstreams') {
    const servers = await runUpstreams()
    ports = servers.map((server) => (server.address() as AddressInfo).port)
    close = async () => {
      await Promise.all(servers.map(async (server) => await new Promise<void>((resolve) => {
        server.close(() => { resolve() })
        server.closeAllConnections()
      })))
    }
  } else {
    const upstreamPorts = (process.env.BENCH_UPSTREAM_PORTS ?? '').split(',').map(Number)
    const door = await runFrontDoor(role, upstreamPorts)
    ports = [door.port]
    close = door.close
  }

  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    // A graceful close, but bounded: a stuck socket must not keep the child (or the parent) alive.
    setTimeout(() => process.exit(0), CHILD_STOP_MS).unref()
    close().then(() => process.exit(0), () => process.exit(1))
  }
  process.on('SIGTERM', stop)
  // The IPC channel closes when the parent dies (even by SIGKILL): never outlive it.
  process.on('disconnect', stop)
  process.send?.({ ports } satisfies Ready)
}

// ---------------------------------------------------------------------------------------------
// Parent: start the children, drive the load, report.

function positiveInteger (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}: expected a positive integer, got "${raw}"`)
  return value
}

const children: ChildProcess[] = []

/** Starts this file again in a child process as `role` and waits for the ports it listens on. */
async function startChild (role: Role, env: Record<string, string> = {}): Promise<number[]> {
  // fork() reuses process.execArgv (`--import tsx`), so the child runs this TypeScript file too.
  const child = fork(fileURLToPath(import.meta.url), [role], { env: { ...process.env, ...env }, stdio: 'inherit' })
  children.push(child)
  return await new Promise<number[]>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${role}: not listening after ${CHILD_START_MS} ms`)) }, CHILD_START_MS)
    child.once('message', (message: Ready) => { clearTimeout(timer); resolve(message.ports) })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${role}: exited early with code ${code}`)) })
  })
}

async function stopChildren (): Promise<void> {
  await Promise.all(children.map(async (child) => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve() }))
    child.kill('SIGTERM')
    // The child bounds its own close; SIGKILL is the backstop if it hangs anyway.
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_MS * 2)
    await exited
    clearTimeout(timer)
  }))
}

/** One GET on a fresh connection (agent: false), for the sanity check before the load. */
async function getBody (url: string): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const request = get(url, { agent: false, timeout: 5_000 }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, body }) })
      response.on('error', reject)
    })
    request.on('timeout', () => { request.destroy(new Error(`GET ${url}: timed out`)) })
    request.on('error', reject)
  })
}

interface Sample {
  requestsPerSecond: number
  p50: number
  p99: number
  total: number
  errors: number
  timeouts: number
  non2xx: number
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

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

function formatTable (rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  // First column left-aligned (names), the numbers right-aligned.
  const line = (row: string[]): string => row.map((cell, column) => column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)).join('  ')
  return [line(rows[0]!), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.slice(1).map(line)].join('\n')
}

async function main (): Promise<void> {
  const duration = positiveInteger('BENCH_DURATION', 5)
  const connections = positiveInteger('BENCH_CONNECTIONS', 50)
  const rounds = positiveInteger('BENCH_ROUNDS', 2)

  // Everything below is bounded by autocannon's durations; this watchdog catches the rest
  // (a child that never answers, a hung close) so the run always ends.
  const budgetMs = rounds * VARIANTS.length * (duration + WARMUP_SECONDS + 5) * 1000 + 60_000
  setTimeout(() => {
    console.error(`bench: still running after ${Math.round(budgetMs / 1000)} s, giving up`)
    for (const child of children) child.kill('SIGKILL')
    process.exit(1)
  }, budgetMs).unref()

  const upstreamPorts = await startChild('upstreams')
  const env = { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') }
  const [[proxyPort], [upstreamPort]] = await Promise.all([startChild('http-proxy', env), startChild('fastify-upstream', env)])
  const urls: Record<Variant, string> = {
    direct: `http://${HOST}:${upstreamPorts[0]}/hello`,
    'http-proxy': `http://${HOST}:${proxyPort}${PREFIX}/hello`,
    'fastify-upstream': `http://${HOST}:${upstreamPort}${PREFIX}/hello`
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
  const samples: Record<Variant, Sample[]> = { direct: [], 'http-proxy': [], 'fastify-upstream': [] }
  for (let round = 1; round <= rounds; round++) {
    for (const variant of VARIANTS) {
      // Warm-up: JIT, keep-alive pools and connection setup happen here, not in the figures.
      await measure(variant, urls[variant], WARMUP_SECONDS, connections)
      const result = await measure(variant, urls[variant], duration, connections)
      const sample: Sample = {
        requestsPerSecond: result.requests.average,
        p50: result.latency.p50,
        p99: result.latency.p99,
        total: result.requests.total,
        errors: result.errors,
        timeouts: result.timeouts,
        non2xx: result.non2xx
      }
      samples[variant].push(sample)
      console.log(`  round ${round}/${rounds} ${variant.padEnd(16)} ${Math.round(sample.requestsPerSecond)} req/s, p50 ${sample.p50} ms, p99 ${sample.p99} ms`)
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
      non2xx: list.reduce((sum, s) => sum + s.non2xx, 0)
    }]
  })) as Record<Variant, { requestsPerSecond: number, p50: number, p99: number, errors: number, non2xx: number }>
  const rps = (variant: Variant): number => medians[variant].requestsPerSecond
  const ratios = {
    'fastify-upstream/direct': rps('fastify-upstream') / rps('direct'),
    'fastify-upstream/http-proxy': rps('fastify-upstream') / rps('http-proxy'),
    'http-proxy/direct': rps('http-proxy') / rps('direct')
  }

  console.log(`\nMedian of ${rounds} round(s), ${duration} s each, ${connections} connections:\n`)
  console.log(formatTable([
    ['variant', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'],
    ...VARIANTS.map((variant) => {
      const m = medians[variant]
      return [variant, Math.round(m.requestsPerSecond).toString(), m.p50.toFixed(1), m.p99.toFixed(1), String(m.errors), String(m.non2xx)]
    })
  ]))
  console.log('\nThroughput ratios (req/s):')
  for (const [name, value] of Object.entries(ratios)) console.log(`  ${name.padEnd(28)} ${value.toFixed(2)}`)

  const resultsDir = fileURLToPath(new URL('./results/', import.meta.url))
  await mkdir(resultsDir, { recursive: true })
  const report = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpus: os.cpus().length,
    settings: { duration, warmup: WARMUP_SECONDS, connections, rounds },
    medians,
    ratios,
    rounds: samples
  }
  await writeFile(`${resultsDir}throughput-latest.json`, JSON.stringify(report, null, 2) + '\n')
  console.log(`\nwrote ${resultsDir}throughput-latest.json`)
}

const role = process.argv[2] as Role | undefined
if (role !== undefined) {
  await runChild(role)
} else {
  let failed = false
  try {
    await main()
  } catch (error) {
    failed = true
    console.error('bench failed:', error instanceof Error ? error.message : error)
  } finally {
    await stopChildren()
  }
  process.exitCode = failed ? 1 : 0
}
