// Instructions per response: what the proxy process executes for one proxied response, counted
// by valgrind's callgrind. Unlike req/s or CPU time, an instruction count does not move with
// whatever else the shared machine is doing, so a change of a few percent shows.
//
//   http-proxy   bare @fastify/http-proxy → upstream A
//   defaults     fastify-upstream, round-robin pool of A and B, every option at its default
//   everything   fastify-upstream, pool of A, B and C with active health checks, outlier
//                detection, retries (on 5xx too), metrics, the status page and requestIdFrom
//
// Run with `npm run bench:instructions` (needs valgrind). Knobs (environment): BENCH_WARMUP
// requests before counting [2000], BENCH_REQUESTS counted [2000], BENCH_CONNECTIONS concurrent
// keep-alive connections [8], BENCH_VARIANTS comma-separated subset. Prints instructions (Ir)
// per response per variant and the ratios; writes bench/results/instructions-latest.json.
//
// How: each proxy runs alone under `valgrind --tool=callgrind` (the upstreams and this load
// generator run natively), uninstrumented until the warm-up (JIT, keep-alive pools) is over;
// then `callgrind_control` turns instrumentation on and zeroes the counters; after the counted requests, `callgrind_control -d` dumps them, and the
// dump's total divided by the requests is the figure. Valgrind runs one thread at a time, so
// GC helper threads count too: the figure is all the work a response costs the process.
import { execFile } from 'node:child_process'
import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Pool } from 'undici'
import {
  HOST, closeServers, formatTable, portOf, positiveInteger, runMain, runUpstreams, serveAsChild, startChild,
  startWatchdog, stopChildren, writeResults
} from './harness.js'

const run = promisify(execFile)
const PREFIX = '/svc'
const VARIANTS = ['http-proxy', 'defaults', 'everything'] as const
/**
 * Valgrind slows the proxy some fifty times, and on a busy machine a connection can take
 * seconds to be accepted: the default 2 s connect timer would fail requests. Only the
 * timer's length changes; the timers still run as with the defaults.
 */
const UNDER_VALGRIND = { connect: 60_000 }
type Variant = typeof VARIANTS[number]

// ---------------------------------------------------------------------------------------------
// Children: the servers.

async function runProxy (variant: Variant, upstreamPorts: number[]): Promise<{ port: number, close: () => Promise<void> }> {
  const { default: Fastify } = await import('fastify')
  const origins = upstreamPorts.map((port) => `http://${HOST}:${port}`)
  if (variant === 'http-proxy') {
    // Warnings only: reply-from says there why a request failed.
    const app = Fastify({ logger: { level: 'warn' } })
    const { default: httpProxy } = await import('@fastify/http-proxy')
    await app.register(httpProxy, { upstream: origins[0]!, prefix: PREFIX })
    await app.listen({ port: 0, host: HOST })
    return { port: portOf(app.server), close: async () => { await app.close() } }
  }
  const { default: upstream, requestIdFrom } = await import('fastify-upstream')
  const everything = variant === 'everything'
  const app = Fastify({ logger: { level: 'warn' }, ...(everything ? { genReqId: requestIdFrom('x-request-id') } : {}) })
  await app.register(upstream, {
    pools: {
      svc: everything
        ? {
            targets: origins,
            health: { path: '/health', interval: 5000 },
            outlier: { consecutiveFailures: 5 },
            retry: { retries: 2, on: ['connect-failure', 'refused-stream', 'reset', 'timeout', '5xx'] },
            timeouts: UNDER_VALGRIND
          }
        : { targets: origins.slice(0, 2), timeouts: UNDER_VALGRIND }
    },
    routes: [{ prefix: PREFIX, pool: 'svc' }],
    ...(everything ? { metrics: { path: '/metrics' }, status: { path: '/_upstream' } } : {})
  })
  await app.listen({ port: 0, host: HOST })
  return { port: portOf(app.server), close: async () => { await app.close() } }
}

async function runChild (role: 'upstreams' | Variant): Promise<void> {
  if (role === 'upstreams') {
    const servers = await runUpstreams(['a', 'b', 'c'])
    serveAsChild(servers.map(portOf), async () => { await closeServers(servers) })
    return
  }
  const ports = (process.env.BENCH_UPSTREAM_PORTS ?? '').split(',').map(Number)
  const proxy = await runProxy(role, ports)
  serveAsChild([proxy.port], proxy.close)
}

// ---------------------------------------------------------------------------------------------
// Parent: the load, the counters, the report.

/** `count` GETs over `connections` keep-alive connections; every answer must be a 200. */
async function load (pool: Pool, count: number, connections: number): Promise<void> {
  let left = count
  const worker = async (): Promise<void> => {
    while (left > 0) {
      left--
      const { statusCode, body } = await pool.request({ path: `${PREFIX}/hello`, method: 'GET' })
      await body.text()
      if (statusCode !== 200) throw new Error(`GET ${PREFIX}/hello answered ${statusCode}`)
    }
  }
  await Promise.all(Array.from({ length: connections }, worker))
}

/** The total Ir of the newest callgrind dump in `dir` for `pid`. */
async function dumpedInstructions (dir: string, pid: number): Promise<number> {
  const dumps = (await readdir(dir)).filter((name) => name.startsWith(`callgrind.${pid}`)).sort()
  for (const name of dumps.reverse()) {
    const text = await readFile(join(dir, name), 'utf8')
    if (!text.includes('Trigger: Client Request') && !text.includes('Trigger: Program termination') && !/trigger: .*dump/i.test(text)) continue
    const totals = /^(?:summary|totals):\s+(\d+)/m.exec(text)
    if (totals !== null) return Number(totals[1])
  }
  throw new Error(`no callgrind dump for pid ${pid} in ${dir}`)
}

async function measureVariant (variant: Variant, upstreamPorts: number[], warmup: number, requests: number, connections: number, dir: string): Promise<number> {
  // Instrumentation starts off: start-up and warm-up run several times faster uninstrumented.
  const valgrind = ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${join(dir, 'callgrind.%p')}`, '--dump-line=no', '--compress-strings=no', '--compress-pos=no']
  const { child, ports } = await startChild(import.meta.url, variant, { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') }, {
    execPath: 'valgrind',
    execArgv: [...valgrind, process.execPath, ...process.execArgv],
    // Start-up under valgrind (node, tsx, fastify) takes a minute or more (more on a busy machine).
    startMs: 600_000
  })
  const pool = new Pool(`http://${HOST}:${ports[0]}`, { connections, pipelining: 1 })
  try {
    const started = Date.now()
    await load(pool, warmup, connections)
    await run('callgrind_control', ['--instr=on', String(child.pid)])
    await run('callgrind_control', ['-z', String(child.pid)])
    const counted = Date.now()
    await load(pool, requests, connections)
    await run('callgrind_control', ['-d', String(child.pid)])
    const done = Date.now()
    const ir = await dumpedInstructions(dir, child.pid!)
    console.log(`  ${variant.padEnd(11)} ${Math.round(ir / requests).toLocaleString('en')} Ir/response ` +
      `(warm-up ${Math.round((counted - started) / 1000)} s, counted ${Math.round((done - counted) / 1000)} s under valgrind)`)
    return ir / requests
  } finally {
    await pool.close()
    await stopChildren()
  }
}

async function main (): Promise<void> {
  const warmup = positiveInteger('BENCH_WARMUP', 2000)
  const requests = positiveInteger('BENCH_REQUESTS', 2000)
  const connections = positiveInteger('BENCH_CONNECTIONS', 8)
  const chosen = (process.env.BENCH_VARIANTS ?? VARIANTS.join(',')).split(',') as Variant[]
  for (const variant of chosen) if (!VARIANTS.includes(variant)) throw new Error(`BENCH_VARIANTS: unknown variant "${variant}"`)
  startWatchdog(chosen.length * 15 * 60_000)
  const dir = join(tmpdir(), `fastify-upstream-callgrind-${process.pid}`)
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })

  console.log(`bench: ${warmup} warm-up then ${requests} counted requests per variant, ${connections} connections, node ${process.version}`)
  const perResponse: Partial<Record<Variant, number>> = {}
  try {
    for (const variant of chosen) {
      // The upstreams restart with each variant: stopChildren ends every child.
      const { ports } = await startChild(import.meta.url, 'upstreams')
      perResponse[variant] = await measureVariant(variant, ports, warmup, requests, connections, dir)
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }

  const base = perResponse['http-proxy']
  console.log('\n' + formatTable([
    ['variant', 'Ir/response', 'vs http-proxy'],
    ...chosen.map((variant) => [variant, Math.round(perResponse[variant]!).toLocaleString('en'), base === undefined ? '-' : (perResponse[variant]! / base).toFixed(3)])
  ]))
  const report = { date: new Date().toISOString(), node: process.version, settings: { warmup, requests, connections }, perResponse }
  console.log(`\nwrote ${await writeResults('instructions-latest.json', report)}`)
}

const role = process.argv[2] as 'upstreams' | Variant | undefined
if (role !== undefined) {
  await runChild(role)
} else {
  await runMain(main)
}
