// Overhead: what each front door costs on the success path, in the same round, against the
// floors of what a Node proxy on undici can cost (the doors are defined in bench/doors.ts):
//
//   direct                  autocannon → upstream a (the latency a proxy adds to)
//   node-floor              node:http + undici Pool.stream → a
//   fastify-floor           a Fastify wildcard route, hijacked reply, undici Pool.stream → a
//   http-proxy              bare @fastify/http-proxy → a
//   defaults                fastify-upstream, defaults (round-robin pool of a, b)
//   observe-off             the same without metrics and status page
//   everything              everything on: 3 targets, active health checks, outlier detection,
//                           retries on every condition, limits, metrics, status page, request ids
//   nginx, haproxy          the peers, round-robin over a and b with keep-alive, one worker
//                           (skipped when not installed; configs in bench/nginx.conf, haproxy.cfg)
//
// Figures per variant: req/s, p50, p99 and the CPU time the proxy's process(es) spent per
// response, read from /proc for every proxy alike, each as a ratio to fastify-floor in the same
// round; CPU per response also against node-floor and http-proxy. CPU per response is the
// figure that moves least on a shared machine. `BENCH_VARIANTS=fastify-floor,everything`
// measures a subset (fastify-floor is always measured: it is the baseline).
//
// Process layout: autocannon runs in the parent; the upstreams share one child process (so the
// upstream side has the same CPU budget in every variant); each Node front door is a child of
// its own; nginx and HAProxy are child processes too. In one process the load generator and
// the server under test would share one event loop, and every variant would measure mostly
// autocannon.
import autocannon from 'autocannon'
import {
  HOST, WARMUP_SECONDS, cpuMicros, figure, getBody, startChild, scenarioEntry, type Figure, type Settings
} from './harness.js'
import { DOORS, FLOOR, PREFIX, UPSTREAMS_SEEN, chosenDoors, type Door, runDoorChild } from './doors.js'
import { PEERS, externalPeers, startPeer, type Peer, type PeerProcess } from './external.js'

const CONNECTIONS = 50
/** Unmeasured load before round 1: the front doors start cold (JIT, connection pools). */
const FIRST_WARMUP_SECONDS = 2

type Variant = 'direct' | Door | Peer

// ---------------------------------------------------------------------------------------------
// Parent.

interface Front { variant: Variant, url: string, pids: number[] }

interface Sample { requestsPerSecond: number, p50: number, p99: number, cpuPerResponse: number }

async function load (door: Front, seconds: number): Promise<autocannon.Result> {
  const result = await autocannon({ url: door.url, connections: CONNECTIONS, duration: seconds, title: door.variant })
  const problems = result.errors + result.timeouts + result.non2xx + result.mismatches + result.resets
  if (problems > 0 || result['2xx'] === 0) {
    throw new Error(`overhead, ${door.variant}: ${result['2xx']} responses 2xx, ${result.errors} errors (${result.timeouts} timeouts), ` +
      `${result.non2xx} non-2xx, ${result.resets} resets in ${seconds} s on ${door.url}`)
  }
  return result
}

async function measure (door: Front, seconds: number): Promise<Sample> {
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
async function sanityCheck (doors: Front[]): Promise<void> {
  for (const door of doors) {
    const seen = new Set<string>()
    for (let i = 0; i < 3; i++) {
      const { status, body } = await getBody(door.url)
      if (status !== 200) throw new Error(`overhead, ${door.variant}: GET ${door.url} answered ${status}: ${body}`)
      seen.add((JSON.parse(body) as { upstream: string }).upstream)
    }
    const expected = (UPSTREAMS_SEEN as Record<string, number>)[door.variant] ?? (door.variant === 'direct' ? 1 : 2)
    if (seen.size !== expected) throw new Error(`overhead, ${door.variant}: 3 requests reached ${[...seen].join(', ')}, expected ${expected} upstream(s)`)
  }
}

export async function overhead (settings: Settings): Promise<{ figures: Figure[], detail: Record<string, Sample[]> }> {
  const script = import.meta.url
  const { ports: upstreamPorts } = await startChild(script, 'upstreams')
  const env = { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') }
  const chosen = chosenDoors<Variant>(['direct', ...DOORS, ...PEERS])
  if (!chosen.includes(FLOOR)) chosen.unshift(FLOOR)
  const doors: Front[] = chosen.includes('direct') ? [{ variant: 'direct', url: `http://${HOST}:${upstreamPorts[0]!}${PREFIX}/hello`, pids: [] }] : []
  for (const variant of DOORS.filter((door) => chosen.includes(door))) {
    const { child, ports } = await startChild(script, variant, env)
    doors.push({ variant, url: `http://${HOST}:${ports[0]!}${PREFIX}/hello`, pids: [child.pid!] })
  }
  const peers: PeerProcess[] = []
  try {
    for (const peer of externalPeers().filter((peer) => chosen.includes(peer))) {
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
    const baseline = (name: string, pick: (s: Sample) => number): { name: string, values: number[] } | undefined =>
      samples[name] === undefined ? undefined : { name, values: of(name, pick) }
    const figures: Figure[] = []
    for (const { variant } of doors) {
      // Each figure as a ratio to the Fastify floor in the same round; the floor's own stand alone.
      const against = (pick: (s: Sample) => number): { name: string, values: number[] } | undefined =>
        variant === FLOOR ? undefined : baseline(FLOOR, pick)
      figures.push(figure('overhead', variant, 'req/s', 'req/s', of(variant, (s) => s.requestsPerSecond), against((s) => s.requestsPerSecond)))
      figures.push(figure('overhead', variant, 'p50', 'ms', of(variant, (s) => s.p50), against((s) => s.p50)))
      figures.push(figure('overhead', variant, 'p99', 'ms', of(variant, (s) => s.p99), against((s) => s.p99)))
      if (variant !== 'direct') figures.push(figure('overhead', variant, 'CPU/response', 'µs', of(variant, (s) => s.cpuPerResponse), against((s) => s.cpuPerResponse)))
    }
    // The gateway's CPU per response against the other baselines: the Node floor and http-proxy.
    for (const variant of ['defaults', 'everything'].filter((name) => samples[name] !== undefined)) {
      for (const other of ['node-floor', 'http-proxy']) {
        const base = baseline(other, (s) => s.cpuPerResponse)
        if (base !== undefined) figures.push(figure('overhead', variant, `CPU/response vs ${other}`, 'µs', of(variant, (s) => s.cpuPerResponse), base))
      }
    }
    // What metrics and the status page's rolling stats cost on the success path, same rounds.
    const off = baseline('observe-off', (s) => s.cpuPerResponse)
    if (off !== undefined && samples.defaults !== undefined) figures.push(figure('overhead', 'defaults', 'CPU/response vs observe-off', 'µs', of('defaults', (s) => s.cpuPerResponse), off))
    return { figures, detail: samples }
  } finally {
    for (const peer of peers) await peer.stop()
  }
}

await scenarioEntry(import.meta.url, 'overhead', async (role) => { await runDoorChild(role as 'upstreams' | Door) })
