// Overhead: what each front door costs on the success path, against a direct connection to the
// upstream, in the same round:
//
//   direct                  autocannon → upstream a
//   http-proxy              autocannon → bare @fastify/http-proxy → a
//   fastify-upstream        autocannon → fastify-upstream, defaults (round-robin pool of a, b)
//   fastify-upstream (all)  the same with everything on: 3 targets, active health checks,
//                           outlier detection, retries on every condition, limits, metrics,
//                           status page, request ids
//   nginx, haproxy          the peers, round-robin over a and b with keep-alive, one worker
//                           (skipped when not installed; configs in bench/nginx.conf, haproxy.cfg)
//
// Figures per variant: req/s, p50 and p99 (as ratios to direct) and the CPU time the proxy's
// process(es) spent per response (as a ratio to bare http-proxy), read from /proc for every
// proxy alike. CPU per response is the figure that moves least on a shared machine.
//
// Process layout: autocannon runs in the parent; the upstreams share one child process (so the
// upstream side has the same CPU budget in every variant); each Node front door is a child of
// its own; nginx and HAProxy are child processes too. In one process the load generator and
// the server under test would share one event loop, and every variant would measure mostly
// autocannon.
import autocannon from 'autocannon'
import {
  HOST, WARMUP_SECONDS, closeServers, cpuMicros, figure, getBody, portOf, runUpstreams,
  serveAsChild, startChild, scenarioEntry, type Figure, type Settings
} from './harness.js'
import { externalPeers, startPeer, type PeerProcess } from './external.js'

const PREFIX = '/svc'
const CONNECTIONS = 50
/** Unmeasured load before round 1: the front doors start cold (JIT, connection pools). */
const FIRST_WARMUP_SECONDS = 2

type Role = 'upstreams' | 'http-proxy' | 'fastify-upstream' | 'fastify-upstream-off' | 'fastify-upstream-all'
type Variant = 'direct' | 'http-proxy' | 'fastify-upstream' | 'fastify-upstream (observe off)' | 'fastify-upstream (all)' | 'nginx' | 'haproxy'

// ---------------------------------------------------------------------------------------------
// Children: the servers.

async function runFrontDoor (role: Exclude<Role, 'upstreams'>, upstreamPorts: number[]): Promise<void> {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  const origins = upstreamPorts.map((port) => `http://${HOST}:${port}`)
  if (role === 'http-proxy') {
    const { default: httpProxy } = await import('@fastify/http-proxy')
    await app.register(httpProxy, { upstream: origins[0]!, prefix: PREFIX })
  } else if (role === 'fastify-upstream' || role === 'fastify-upstream-off') {
    // The defaults, and the defaults without metrics and status page: what observing costs.
    const { default: upstream } = await import('fastify-upstream')
    await app.register(upstream, {
      pools: { svc: { targets: origins.slice(0, 2), balancer: 'round-robin' } },
      routes: [{ prefix: PREFIX, pool: 'svc' }],
      ...(role === 'fastify-upstream-off' ? { metrics: false, status: false } : {})
    })
  } else {
    const { default: upstream } = await import('fastify-upstream')
    await app.register(upstream, {
      pools: {
        svc: {
          targets: origins,
          health: { path: '/health', interval: 1000 },
          outlier: { consecutiveFailures: 5 },
          retry: { retries: 2, on: ['connect-failure', 'refused-stream', 'reset', 'timeout', '5xx'] },
          limits: { maxConcurrent: 10_000, maxPending: 10_000 },
          timeouts: { total: 30_000 }
        }
      },
      routes: [{ prefix: PREFIX, pool: 'svc' }],
      errors: { expose: 'full' },
      metrics: { path: '/metrics' },
      status: { path: '/_upstream' },
      requestIdHeader: 'x-request-id'
    })
  }
  await app.listen({ port: 0, host: HOST })
  serveAsChild([portOf(app.server)], async () => { await app.close() })
}

async function runChild (role: Role): Promise<void> {
  if (role === 'upstreams') {
    const servers = await runUpstreams(['a', 'b', 'c'])
    serveAsChild(servers.map(portOf), async () => { await closeServers(servers) })
  } else {
    await runFrontDoor(role, (process.env.BENCH_UPSTREAM_PORTS ?? '').split(',').map(Number))
  }
}

// ---------------------------------------------------------------------------------------------
// Parent.

interface Door { variant: Variant, url: string, pids: number[] }

interface Sample { requestsPerSecond: number, p50: number, p99: number, cpuPerResponse: number }

async function load (door: Door, seconds: number): Promise<autocannon.Result> {
  const result = await autocannon({ url: door.url, connections: CONNECTIONS, duration: seconds, title: door.variant })
  const problems = result.errors + result.timeouts + result.non2xx + result.mismatches + result.resets
  if (problems > 0 || result['2xx'] === 0) {
    throw new Error(`overhead, ${door.variant}: ${result['2xx']} responses 2xx, ${result.errors} errors (${result.timeouts} timeouts), ` +
      `${result.non2xx} non-2xx, ${result.resets} resets in ${seconds} s on ${door.url}`)
  }
  return result
}

async function measure (door: Door, seconds: number): Promise<Sample> {
  await load(door, WARMUP_SECONDS)
  const cpuBefore = cpuMicros(door.pids)
  const result = await load(door, seconds)
  const cpu = cpuMicros(door.pids) - cpuBefore
  return {
    requestsPerSecond: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuPerResponse: door.pids.length === 0 ? NaN : cpu / result.requests.total
  }
}

/** Every front door answers 200; the pools really spread over their targets. */
async function sanityCheck (doors: Door[]): Promise<void> {
  for (const door of doors) {
    const seen = new Set<string>()
    for (let i = 0; i < 3; i++) {
      const { status, body } = await getBody(door.url)
      if (status !== 200) throw new Error(`overhead, ${door.variant}: GET ${door.url} answered ${status}: ${body}`)
      seen.add((JSON.parse(body) as { upstream: string }).upstream)
    }
    const expected = door.variant === 'direct' || door.variant === 'http-proxy' ? 1 : door.variant === 'fastify-upstream (all)' ? 3 : 2
    if (seen.size !== expected) throw new Error(`overhead, ${door.variant}: 3 requests reached ${[...seen].join(', ')}, expected ${expected} upstream(s)`)
  }
}

export async function overhead (settings: Settings): Promise<{ figures: Figure[], detail: Record<string, Sample[]> }> {
  const script = import.meta.url
  const { ports: upstreamPorts } = await startChild(script, 'upstreams')
  const env = { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') }
  const roles: Array<[Variant, Role]> = [['http-proxy', 'http-proxy'], ['fastify-upstream', 'fastify-upstream'], ['fastify-upstream (observe off)', 'fastify-upstream-off'], ['fastify-upstream (all)', 'fastify-upstream-all']]
  const doors: Door[] = [{ variant: 'direct', url: `http://${HOST}:${upstreamPorts[0]!}${PREFIX}/hello`, pids: [] }]
  for (const [variant, role] of roles) {
    const { child, ports } = await startChild(script, role, env)
    doors.push({ variant, url: `http://${HOST}:${ports[0]!}${PREFIX}/hello`, pids: [child.pid!] })
  }
  const peers: PeerProcess[] = []
  try {
    for (const peer of externalPeers()) {
      const started = await startPeer(peer, { servers: upstreamPorts.slice(0, 2), prefix: PREFIX })
      peers.push(started)
      doors.push({ variant: peer, url: `http://${HOST}:${started.port}${PREFIX}/hello`, pids: started.pids })
    }
    await sanityCheck(doors)
    if (!settings.quick) for (const door of doors) await load(door, FIRST_WARMUP_SECONDS)

    const samples: Record<string, Sample[]> = Object.fromEntries(doors.map((door) => [door.variant, []]))
    for (let round = 1; round <= settings.rounds; round++) {
      for (const door of doors) {
        const sample = await measure(door, settings.seconds)
        samples[door.variant]!.push(sample)
        console.log(`  overhead round ${round}/${settings.rounds} ${door.variant.padEnd(22)} ${Math.round(sample.requestsPerSecond)} req/s, ` +
          `p50 ${sample.p50} ms, p99 ${sample.p99} ms` + (Number.isNaN(sample.cpuPerResponse) ? '' : `, ${Math.round(sample.cpuPerResponse)} µs CPU/response`))
      }
    }

    const of = (variant: string, pick: (s: Sample) => number): number[] => samples[variant]!.map(pick)
    const direct = (pick: (s: Sample) => number): { name: string, values: number[] } => ({ name: 'direct', values: of('direct', pick) })
    const figures: Figure[] = []
    for (const { variant } of doors) {
      const rps = of(variant, (s) => s.requestsPerSecond)
      figures.push(figure('overhead', variant, 'req/s', 'req/s', rps, variant === 'direct' ? undefined : direct((s) => s.requestsPerSecond)))
      figures.push(figure('overhead', variant, 'p50', 'ms', of(variant, (s) => s.p50), variant === 'direct' ? undefined : direct((s) => s.p50)))
      figures.push(figure('overhead', variant, 'p99', 'ms', of(variant, (s) => s.p99), variant === 'direct' ? undefined : direct((s) => s.p99)))
      if (variant !== 'direct') {
        figures.push(figure('overhead', variant, 'CPU/response', 'µs', of(variant, (s) => s.cpuPerResponse),
          variant === 'http-proxy' ? undefined : { name: 'http-proxy', values: of('http-proxy', (s) => s.cpuPerResponse) }))
      }
    }
    // The goal: at least bare http-proxy's req/s, with the defaults and with everything on.
    const bare = { name: 'http-proxy', values: of('http-proxy', (s) => s.requestsPerSecond) }
    for (const variant of ['fastify-upstream', 'fastify-upstream (all)']) {
      figures.push(figure('overhead', variant, 'req/s vs http-proxy', 'req/s', of(variant, (s) => s.requestsPerSecond), bare))
    }
    // What metrics and the status page's rolling stats cost on the success path, same rounds.
    const off = 'fastify-upstream (observe off)'
    figures.push(figure('overhead', 'fastify-upstream', 'req/s vs observe off', 'req/s', of('fastify-upstream', (s) => s.requestsPerSecond), { name: off, values: of(off, (s) => s.requestsPerSecond) }))
    figures.push(figure('overhead', 'fastify-upstream', 'CPU/response vs observe off', 'µs', of('fastify-upstream', (s) => s.cpuPerResponse), { name: off, values: of(off, (s) => s.cpuPerResponse) }))
    return { figures, detail: samples }
  } finally {
    for (const peer of peers) await peer.stop()
  }
}

await scenarioEntry(import.meta.url, 'overhead', async (role) => { await runChild(role as Role) })
