// Throughput of a failure storm against the success path, in the same run, on one machine, over
// loopback, and the gateway's event-loop delay during each:
//
//   success        autocannon → fastify-upstream /ok   → pool of two healthy node:http upstreams
//   failure storm  autocannon → fastify-upstream /dead → pool of two ports where nothing listens
//
// Every storm request fails on a refused connection, is classified, answered with problem+json
// (full exposure) and logged once: that whole path is what is measured. While a target refuses,
// the gateway makes one connection attempt to it at a time and requests that arrive meanwhile
// share its outcome (lib/pool/connector.ts), so the table also shows the TCP connects the
// gateway opened per response: about 1 without that gate, far fewer with it. The goal is a storm at no less
// than 0.8× the success path's req/s, so a dead service does not take the gateway down with it.
//
// Run with `npm run bench:failures` (= `npm run bench -- --only storm`). 50 connections; rounds
// and seconds per measurement from the run's settings. The gateway counts the lines it logs (all
// of them, and its failure records) in pino's logMethod hook. Counts are per response finished
// in the timed run, so requests in flight at its edges (up to 50 of them) blur them a little.
//
// Process layout: autocannon in the parent; the upstreams in one child; the gateway in another,
// with Fastify's logger on at `info` (the failure record and Fastify's request lines are part
// of the cost; one configuration for both variants). The gateway child measures its own event
// loop and answers the parent over IPC: 'reset' before each timed run, 'report' after it. It
// also counts each response's status and Proxy-Status error type, so a run proves the storm was
// all `connection_refused` rather than trusting the status code alone. Both pools keep the
// plugin's defaults (ejection, retries, budgets): the storm is what a default gateway does when
// every target refuses. During the storm the upstream child has nothing to do, so the gateway
// gets more of the machine than during the success run; the CPU time per response (measured in
// the gateway) is the figure that does not depend on that.
import { subscribe } from 'node:diagnostics_channel'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import autocannon from 'autocannon'
import {
  HOST, WARMUP_SECONDS, ask, closeServers, meterResponses, type CpuReport, closedPorts, figure, getBody, portOf,
  runUpstreams, serveAsChild, startChild, scenarioEntry, type Figure, type Settings
} from './harness.js'

type Role = 'upstreams' | 'gateway'
type Variant = 'success' | 'failure storm'
const VARIANTS: Variant[] = ['success', 'failure storm']
const PATHS: Record<Variant, string> = { success: '/ok/hello', 'failure storm': '/dead/hello' }
/** The one status each variant may answer with; anything else fails the run. */
const EXPECTED_STATUS: Record<Variant, number> = { success: 200, 'failure storm': 502 }
/** What the gateway's own count must show: the status and, for failures, the Proxy-Status error. */
const EXPECTED_OUTCOME: Record<Variant, string> = { success: '200', 'failure storm': '502 connection_refused' }
/** Clients go away at the end of a timed run; their requests in flight end as this outcome. */
const ABORTED = 'client gone'
/** Sent on every request: the failure answers are problem+json, as an API client gets them. */
const HEADERS = { accept: 'application/json' }
const GOAL = 0.8
const CONNECTIONS = 50
/**
 * Before round 1, each variant runs this long unmeasured. The gateway starts cold: without it,
 * round 1's success run (the first load it ever sees) measured about 30% below later rounds
 * while its code was still being optimized, and the storm after it did not, which flattered
 * the ratio.
 */
const FIRST_WARMUP_SECONDS = 3
const LOOP_RESOLUTION_MS = 10

// ---------------------------------------------------------------------------------------------
// IPC between the parent and the gateway child.

/** Event-loop delay in ms beyond the monitor's timer interval (an idle loop reads about 0). */
interface LoopDelay { p50: number, p99: number, max: number, mean: number }

/** What the gateway child measures besides its CPU time per response (see meterResponses). */
interface GatewayMeasures {
  loop: LoopDelay
  /** The same percentiles as the histogram holds them: the timer interval included. */
  loopRaw: LoopDelay
  /** Share of the time the gateway's event loop was busy (performance.eventLoopUtilization). */
  utilization: number
  /** TCP connections the gateway opened (to upstreams: it opens no other) per response. */
  connectsPerResponse: number
  /** Responses the gateway finished, by `status [error type]`. */
  outcomes: Record<string, number>
  /** Log lines per response: every line the gateway wrote, Fastify's request lines included. */
  logLinesPerResponse: number
  /** The gateway's failure records (error level, error connection_refused) per response: 1 per failure is the promise. */
  failureRecordsPerResponse: number
}

type GatewayReport = CpuReport & GatewayMeasures

// ---------------------------------------------------------------------------------------------
// Children: the servers.

async function runGateway (upstreamPorts: number[], deadPorts: number[], logFile: string): Promise<{ port: number, close: () => Promise<void> }> {
  const { default: Fastify } = await import('fastify')
  const { default: upstream } = await import('fastify-upstream')
  // Fastify's `file` is pino.destination(file): the log path a production gateway has, minus the disk.
  // Every line passes through pino's logMethod hook (disabled levels never reach it): counted
  // here, exactly, rather than read back from a file that pino writes asynchronously.
  let logLines = 0
  let failureRecords = 0
  const app = Fastify({
    logger: {
      level: 'info',
      file: logFile,
      hooks: {
        logMethod (args, method, level) {
          logLines++
          const record = args[0] as { error?: unknown } | string
          if (level >= 50 && typeof record === 'object' && record.error === 'connection_refused') failureRecords++
          method.apply(this, args)
        }
      }
    }
  })

  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS })
  loop.enable()
  let utilizationFrom = performance.eventLoopUtilization()
  const outcomes = new Map<string, number>()
  // Node publishes every client socket it creates here, whether the connect succeeds or not.
  let connects = 0
  subscribe('net.client.socket', () => { connects++ })
  // Added before the plugin so its routes inherit it. The same few operations on every response
  // of both variants: a lookup of a header the gateway already set, and a counter.
  app.addHook('onResponse', (_request, reply, done) => {
    let outcome: string
    if (!reply.raw.writableFinished) {
      outcome = ABORTED
    } else if (reply.statusCode < 400) {
      outcome = String(reply.statusCode)
    } else {
      const error = /error=([a-z_]+)/.exec(String(reply.getHeader('proxy-status') ?? ''))?.[1] ?? 'no-proxy-status'
      outcome = `${reply.statusCode} ${error}`
    }
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    done()
  })

  const origins = (ports: number[]): string[] => ports.map((port) => `http://${HOST}:${port}`)
  await app.register(upstream, {
    pools: {
      ok: { targets: origins(upstreamPorts), balancer: 'round-robin' },
      dead: { targets: origins(deadPorts), balancer: 'round-robin' }
    },
    routes: [{ prefix: '/ok', pool: 'ok' }, { prefix: '/dead', pool: 'dead' }],
    errors: { expose: 'full' }
  })
  await app.listen({ port: 0, host: HOST })

  const ms = (ns: number): number => ns / 1e6
  const beyondTimer = (ns: number): number => Math.max(0, ms(ns) - LOOP_RESOLUTION_MS)
  meterResponses<GatewayMeasures>(app.server, {
    reset () {
      loop.reset()
      utilizationFrom = performance.eventLoopUtilization()
      connects = 0
      logLines = 0
      failureRecords = 0
      outcomes.clear()
    },
    report: (responses) => ({
      loop: { p50: beyondTimer(loop.percentile(50)), p99: beyondTimer(loop.percentile(99)), max: beyondTimer(loop.max), mean: beyondTimer(loop.mean) },
      loopRaw: { p50: ms(loop.percentile(50)), p99: ms(loop.percentile(99)), max: ms(loop.max), mean: ms(loop.mean) },
      utilization: performance.eventLoopUtilization(utilizationFrom).utilization,
      connectsPerResponse: connects / Math.max(1, responses),
      outcomes: Object.fromEntries(outcomes),
      logLinesPerResponse: logLines / Math.max(1, responses),
      failureRecordsPerResponse: failureRecords / Math.max(1, responses)
    })
  })
  return { port: portOf(app.server), close: async () => { loop.disable(); await app.close() } }
}

async function runChild (role: Role): Promise<void> {
  if (role === 'upstreams') {
    const servers = await runUpstreams(['a', 'b'])
    serveAsChild(servers.map(portOf), async () => { await closeServers(servers) })
  } else {
    const ports = (name: string): number[] => (process.env[name] ?? '').split(',').map(Number)
    const gateway = await runGateway(ports('BENCH_UPSTREAM_PORTS'), ports('BENCH_DEAD_PORTS'), process.env.BENCH_LOG_FILE ?? '/dev/null')
    serveAsChild([gateway.port], gateway.close)
  }
}

// ---------------------------------------------------------------------------------------------
// Parent: start the children, drive the load, report.

/** One timed run: what autocannon saw, and what the gateway measured of itself. */
type Sample = Omit<GatewayReport, 'cmd' | 'responses'> & {
  requestsPerSecond: number
  p50: number
  p99: number
  total: number
  statusCodes: Record<string, number>
}

function statusCounts (result: autocannon.Result): Record<string, number> {
  return Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([status, stats]) => [status, stats.count ?? 0]))
}

/** A run counts only if every response had the variant's status and nothing else went wrong. */
async function measure (variant: Variant, url: string, seconds: number, connections: number): Promise<autocannon.Result> {
  const result = await autocannon({ url, connections, duration: seconds, title: variant, headers: HEADERS })
  const statuses = statusCounts(result)
  const expected = statuses[EXPECTED_STATUS[variant]] ?? 0
  const unexpected = Object.values(statuses).reduce((sum, count) => sum + count, 0) - expected
  if (expected === 0 || unexpected > 0 || result.errors + result.timeouts + result.mismatches + result.resets > 0) {
    const seen = Object.entries(statuses).map(([status, count]) => `${count} × ${status}`).join(', ') || 'no responses'
    throw new Error(`${variant}: expected only ${EXPECTED_STATUS[variant]}, got ${seen}; ${result.errors} errors ` +
      `(${result.timeouts} timeouts), ${result.mismatches} mismatches, ${result.resets} resets in ${seconds} s on ${url}`)
  }
  return result
}

/** The gateway's own count must agree: the storm was refused connections, nothing else. */
function checkOutcomes (variant: Variant, outcomes: Record<string, number>): void {
  const wrong = Object.entries(outcomes).filter(([outcome]) => outcome !== EXPECTED_OUTCOME[variant] && outcome !== ABORTED)
  if (wrong.length > 0 || (outcomes[EXPECTED_OUTCOME[variant]] ?? 0) === 0) {
    throw new Error(`${variant}: the gateway answered ${JSON.stringify(outcomes)}, expected only "${EXPECTED_OUTCOME[variant]}"`)
  }
}

/** Before any load: each route answers as the variant assumes, on both targets of its pool. */
async function sanityCheck (port: number, deadPorts: number[]): Promise<void> {
  const upstreams = new Set<string>()
  const deadTargets = new Set<string>()
  for (let i = 0; i < 2; i++) {
    const ok = await getBody(`http://${HOST}:${port}${PATHS.success}`, HEADERS)
    if (ok.status !== 200) throw new Error(`success: GET ${PATHS.success} answered ${ok.status}: ${ok.body}`)
    upstreams.add((JSON.parse(ok.body) as { upstream: string }).upstream)

    const dead = await getBody(`http://${HOST}:${port}${PATHS['failure storm']}`, HEADERS)
    const problem = (dead.headers['content-type'] ?? '').startsWith('application/problem+json')
      ? JSON.parse(dead.body) as { error?: string, target?: string }
      : {}
    if (dead.status !== 502 || problem.error !== 'connection_refused' || !String(dead.headers['proxy-status']).includes('error=connection_refused')) {
      throw new Error(`failure storm: GET ${PATHS['failure storm']} answered ${dead.status} ${dead.headers['content-type']}, ` +
        `proxy-status ${dead.headers['proxy-status']}: ${dead.body} (expected 502 problem+json connection_refused; ` +
        `did something start listening on ${deadPorts.join(' or ')}?)`)
    }
    deadTargets.add(problem.target ?? '?')
  }
  if (upstreams.size !== 2) throw new Error(`success: two requests reached ${[...upstreams].join(', ')}, expected upstreams a and b`)
  if (deadTargets.size !== 2) throw new Error(`failure storm: two requests failed on ${[...deadTargets].join(', ')}, expected both dead targets`)
}

export async function storm (settings: Settings): Promise<{ figures: Figure[], detail: Record<Variant, Sample[]> }> {
  const logFile = process.env.BENCH_LOG_FILE ?? '/dev/null'
  const { ports: upstreamPorts } = await startChild(import.meta.url, 'upstreams')
  const deadPorts = await closedPorts(2)
  const { child: gateway, ports: [gatewayPort] } = await startChild(import.meta.url, 'gateway', {
    BENCH_UPSTREAM_PORTS: upstreamPorts.join(','),
    BENCH_DEAD_PORTS: deadPorts.join(','),
    BENCH_LOG_FILE: logFile
  })
  await sanityCheck(gatewayPort!, deadPorts)
  const urls = Object.fromEntries(VARIANTS.map((variant) => [variant, `http://${HOST}:${gatewayPort}${PATHS[variant]}`])) as Record<Variant, string>

  if (!settings.quick) for (const variant of VARIANTS) await measure(variant, urls[variant], FIRST_WARMUP_SECONDS, CONNECTIONS)
  const samples: Record<Variant, Sample[]> = { success: [], 'failure storm': [] }
  for (let round = 1; round <= settings.rounds; round++) {
    for (const variant of VARIANTS) {
      // Warm-up: JIT, keep-alive pools and connection setup happen here, not in the figures.
      await measure(variant, urls[variant], WARMUP_SECONDS, CONNECTIONS)
      await ask(gateway, { cmd: 'reset' })
      const result = await measure(variant, urls[variant], settings.seconds, CONNECTIONS)
      const { cmd: _cmd, responses: _responses, ...measures } = await ask<GatewayReport>(gateway, { cmd: 'report' })
      checkOutcomes(variant, measures.outcomes)
      const sample: Sample = {
        requestsPerSecond: result.requests.average,
        p50: result.latency.p50,
        p99: result.latency.p99,
        total: result.requests.total,
        statusCodes: statusCounts(result),
        ...measures
      }
      samples[variant].push(sample)
      console.log(`  storm round ${round}/${settings.rounds} ${variant.padEnd(13)} ${Math.round(sample.requestsPerSecond)} req/s, p50 ${sample.p50} ms, ` +
        `p99 ${sample.p99} ms, event-loop delay p99 ${sample.loop.p99.toFixed(1)} ms, ${Math.round(sample.cpuPerResponse)} µs CPU/response, ` +
        `${sample.logLinesPerResponse.toFixed(2)} log lines/response (${sample.failureRecordsPerResponse.toFixed(2)} failure records)`)
    }
  }

  const success = samples.success
  const figures: Figure[] = []
  for (const variant of VARIANTS) {
    const list = samples[variant]
    const base = variant === 'success' ? undefined : 'success'
    const ratioTo = (pick: (s: Sample) => number): { name: string, values: number[] } | undefined => base === undefined ? undefined : { name: base, values: success.map(pick) }
    const of = (pick: (s: Sample) => number): number[] => list.map(pick)
    figures.push(figure('storm', variant, 'req/s', 'req/s', of((s) => s.requestsPerSecond), ratioTo((s) => s.requestsPerSecond)))
    figures.push(figure('storm', variant, 'p99', 'ms', of((s) => s.p99), ratioTo((s) => s.p99)))
    figures.push(figure('storm', variant, 'CPU/response', 'µs', of((s) => s.cpuPerResponse), ratioTo((s) => s.cpuPerResponse)))
    figures.push(figure('storm', variant, 'event-loop delay p99', 'ms', of((s) => s.loop.p99)))
    figures.push(figure('storm', variant, 'connects/response', '', of((s) => s.connectsPerResponse)))
    figures.push(figure('storm', variant, 'log lines/response', '', of((s) => s.logLinesPerResponse)))
    if (variant === 'failure storm') figures.push(figure('storm', variant, 'failure records/failure', '', of((s) => s.failureRecordsPerResponse)))
  }
  const ratio = figures.find((f) => f.variant === 'failure storm' && f.metric === 'req/s')!.ratio!.median
  console.log(`  failure storm / success (req/s): ${ratio.toFixed(2)} (goal ≥ ${GOAL.toFixed(2)}: ${ratio >= GOAL ? 'PASS' : 'BELOW'})`)
  return { figures, detail: samples }
}

await scenarioEntry(import.meta.url, 'storm', async (role) => { await runChild(role as Role) })
