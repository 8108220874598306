// Resilience: what each front door does when upstreams misbehave.
//
//   kill    3 targets under steady GET load; one is SIGKILLed a third of the way in. Client-
//           visible errors and the time from the kill to the last of them, for fastify-upstream
//           with retries off (the baseline), with its default options, nginx (proxy_next_upstream
//           error timeout, its default) and HAProxy (retries 3, option redispatch); for
//           fastify-upstream also the time from the kill to the target's ejection.
//   slow    one of 3 targets answers 200 ms late: p50/p99 and the slow target's share of the
//           requests with round-robin, least-request and p2c-ewma, nginx least_conn and HAProxy
//           leastconn, each as a ratio to the same front door over a pool with no slow target
//           (fastify-upstream's balancers: round-robin over the healthy pool).
//   budget  every target answers 503 and retries are on for 5xx: upstream requests per client
//           request with the retry budget and without it.
//
// Process layout: autocannon in the parent; the gateway in a child (as nginx and HAProxy are
// processes of their own); upstreams in children, for `kill` one process each so that one can be
// SIGKILLed. The upstreams count what they serve, so shares are measured the same for every
// front door; the gateway child watches its own target states for the ejection time.
import { createServer, type Server } from 'node:http'
import type { ChildProcess } from 'node:child_process'
import autocannon from 'autocannon'
import type { PoolInput } from 'fastify-upstream'
import {
  HOST, WARMUP_SECONDS, ask, closeServers, figure, portOf, serveAsChild, sleep, startChild,
  stopChildren, scenarioEntry, type Figure, type Settings
} from './harness.js'
import { externalPeers, startPeer, type Peer, type PeerProcess } from './external.js'

const CONNECTIONS = 20
const SLOW_MS = 200
const HEALTHY = 'all healthy (round-robin)'

// ---------------------------------------------------------------------------------------------
// Children.

/** Upstreams in one process, one per entry of BENCH_DELAYS (ms), each answering BENCH_STATUS and counting. */
async function runUpstreamsChild (): Promise<void> {
  const delays = (process.env.BENCH_DELAYS ?? '0').split(',').map(Number)
  const status = Number(process.env.BENCH_STATUS ?? 200)
  const body = JSON.stringify({ ok: status < 400 })
  const served = delays.map(() => 0)
  const servers: Server[] = delays.map((delay, i) => {
    const server = createServer((_request, response) => {
      served[i]!++
      const answer = (): void => {
        response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        response.end(body)
      }
      if (delay > 0) setTimeout(answer, delay)
      else answer()
    })
    server.keepAliveTimeout = 10_000
    return server
  })
  await Promise.all(servers.map(async (server) => await new Promise<void>((resolve) => server.listen(0, HOST, resolve))))
  process.on('message', (message: { cmd: string }) => {
    if (message.cmd === 'served') process.send?.({ cmd: 'served', served })
  })
  serveAsChild(servers.map(portOf), async () => { await closeServers(servers) })
}

/**
 * fastify-upstream with the pools in BENCH_POOLS (JSON), each on the route /<pool name>. Answers
 * `watch` (start watching the first target of a pool) and `ejected` (when it was ejected, by
 * Date.now(), the clock the parent shares).
 */
async function runGatewayChild (): Promise<void> {
  const { default: Fastify } = await import('fastify')
  const { default: upstream } = await import('fastify-upstream')
  const pools = JSON.parse(process.env.BENCH_POOLS ?? '{}') as Record<string, PoolInput>
  const app = Fastify({ logger: false })
  await app.register(upstream, { pools, routes: Object.keys(pools).map((name) => ({ prefix: `/${name}`, pool: name })), errors: { expose: 'full' } })
  await app.listen({ port: 0, host: HOST })
  let ejectedAt: number | null = null
  let watcher: NodeJS.Timeout | undefined
  process.on('message', (message: { cmd: string, pool?: string }) => {
    if (message.cmd === 'watch') {
      ejectedAt = null
      clearInterval(watcher)
      watcher = setInterval(() => {
        if (app.upstream.pool(message.pool!).targets()[0]!.state !== 'ejected') return
        ejectedAt = Date.now()
        clearInterval(watcher)
      }, 2)
      process.send?.({ cmd: 'watch' })
    } else if (message.cmd === 'ejected') {
      clearInterval(watcher)
      process.send?.({ cmd: 'ejected', at: ejectedAt })
    }
  })
  serveAsChild([portOf(app.server)], async () => { clearInterval(watcher); await app.close() })
}

// ---------------------------------------------------------------------------------------------
// Parent.

const origin = (port: number): string => `http://${HOST}:${port}`

async function startUpstreams (delays: number[], status = 200): Promise<{ child: ChildProcess, ports: number[] }> {
  return await startChild(import.meta.url, 'upstreams', { BENCH_DELAYS: delays.join(','), BENCH_STATUS: String(status) })
}

async function startGateway (pools: Record<string, PoolInput>): Promise<{ child: ChildProcess, port: number }> {
  const { child, ports } = await startChild(import.meta.url, 'gateway', { BENCH_POOLS: JSON.stringify(pools) })
  return { child, port: ports[0]! }
}

async function served (upstreams: ChildProcess): Promise<number[]> {
  return (await ask<{ cmd: string, served: number[] }>(upstreams, { cmd: 'served' })).served
}

interface LoadResult { result: autocannon.Result, failed: number, lastFailureAt: number | null }

/** autocannon, noting when the last client-visible failure (error or non-2xx) happened. */
async function load (url: string, options: { seconds?: number, amount?: number, connections?: number }): Promise<LoadResult> {
  let lastFailureAt: number | null = null
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({
      url,
      connections: options.connections ?? CONNECTIONS,
      ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.seconds ?? 5 })
    }, (error: unknown, result: autocannon.Result) => { if (error !== null && error !== undefined) reject(error); else resolve(result) })
    instance.on('response', (_client, status) => { if (status >= 300) lastFailureAt = Date.now() })
    instance.on('reqError', () => { lastFailureAt = Date.now() })
  })
  return { result, failed: result.errors + result.timeouts + result.non2xx, lastFailureAt }
}

// kill ------------------------------------------------------------------------------------------

type KillSystem = 'fastify-upstream, retries off' | 'fastify-upstream' | Peer

/** killToLastErrorMs: null when no client error followed the kill (there is no last one to time). */
interface KillSample { requests: number, clientErrors: number, killToLastErrorMs: number | null, killToEjectionMs: number | null }

async function killOnce (system: KillSystem, seconds: number): Promise<KillSample> {
  const upstreams = await Promise.all([0, 1, 2].map(async () => await startUpstreams([0])))
  const ports = upstreams.map((u) => u.ports[0]!)
  let peer: PeerProcess | null = null
  let gateway: ChildProcess | null = null
  let url: string
  try {
    if (system === 'nginx' || system === 'haproxy') {
      peer = await startPeer(system, { servers: ports, prefix: '/p' })
      url = `${origin(peer.port)}/p/x`
    } else {
      const started = await startGateway({ p: { targets: ports.map(origin), ...(system === 'fastify-upstream' ? {} : { retry: { retries: 0 } }) } })
      gateway = started.child
      url = `${origin(started.port)}/p/x`
    }
    await load(url, { seconds: WARMUP_SECONDS })
    if (gateway !== null) await ask(gateway, { cmd: 'watch', pool: 'p' })
    const run = load(url, { seconds })
    await sleep((seconds * 1000) / 3)
    const killedAt = Date.now()
    upstreams[0]!.child.kill('SIGKILL')
    const { result, failed, lastFailureAt } = await run
    const ejectedAt = gateway === null ? null : (await ask<{ cmd: string, at: number | null }>(gateway, { cmd: 'ejected' })).at
    return {
      requests: result.requests.total,
      clientErrors: failed,
      killToLastErrorMs: lastFailureAt === null ? null : Math.max(0, lastFailureAt - killedAt),
      killToEjectionMs: ejectedAt === null ? null : ejectedAt - killedAt
    }
  } finally {
    await peer?.stop()
    // This round's upstreams and gateway: the next round starts fresh.
    await stopChildren()
  }
}

export async function kill (settings: Settings): Promise<{ figures: Figure[], detail: Record<string, KillSample[]> }> {
  const seconds = Math.max(3, settings.seconds)
  const systems: KillSystem[] = ['fastify-upstream, retries off', 'fastify-upstream', ...externalPeers()]
  const samples: Record<string, KillSample[]> = Object.fromEntries(systems.map((s) => [s, []]))
  for (let round = 1; round <= settings.rounds; round++) {
    for (const system of systems) {
      const sample = await killOnce(system, seconds)
      samples[system]!.push(sample)
      console.log(`  kill round ${round}/${settings.rounds} ${system.padEnd(29)} ${sample.requests} requests, ${sample.clientErrors} client errors, ` +
        (sample.killToLastErrorMs === null ? 'none after the kill' : `last ${sample.killToLastErrorMs} ms after the kill`) + (sample.killToEjectionMs === null ? '' : `, ejected after ${sample.killToEjectionMs} ms`))
    }
  }
  const baseline = 'fastify-upstream, retries off'
  const figures: Figure[] = []
  for (const system of systems) {
    const list = samples[system]!
    const errors = list.map((s) => s.clientErrors)
    figures.push(figure('kill', system, 'client errors', 'requests', errors, system === baseline ? undefined : { name: baseline, values: samples[baseline]!.map((s) => s.clientErrors) }))
    figures.push(figure('kill', system, 'errors per 10k requests', '', list.map((s) => (s.clientErrors / Math.max(1, s.requests)) * 10_000)))
    // Only rounds that had an error have a last one; with none in any round the figure is left out.
    const lastErrors = list.flatMap((s) => s.killToLastErrorMs === null ? [] : [s.killToLastErrorMs])
    if (lastErrors.length > 0) figures.push(figure('kill', system, 'kill → last error', 'ms', lastErrors))
    if (system === 'fastify-upstream') {
      figures.push(figure('kill', system, 'kill → ejection', 'ms', list.map((s) => s.killToEjectionMs ?? NaN)))
    }
  }
  return { figures, detail: samples }
}

// slow ------------------------------------------------------------------------------------------

interface SlowSample { requests: number, p50: number, p99: number, slowShare: number, errors: number }

export async function slow (settings: Settings): Promise<{ figures: Figure[], detail: Record<string, SlowSample[]> }> {
  // Upstreams: the slow one, then three healthy; the all-healthy pool uses healthy[0] in its place.
  const upstreams = await startUpstreams([SLOW_MS, 0, 0, 0])
  const [slowPort, spare, ...rest] = upstreams.ports as [number, number, ...number[]]
  const withSlow = [slowPort, ...rest]
  const { port } = await startGateway({
    healthy: { targets: [spare, ...rest].map(origin), balancer: 'round-robin' },
    'round-robin': { targets: withSlow.map(origin), balancer: 'round-robin' },
    'least-request': { targets: withSlow.map(origin), balancer: 'least-request' },
    'p2c-ewma': { targets: withSlow.map(origin), balancer: 'p2c-ewma' }
  })
  const peers: PeerProcess[] = []
  try {
    const urls: Record<string, string> = {
      [HEALTHY]: `${origin(port)}/healthy/x`,
      'round-robin': `${origin(port)}/round-robin/x`,
      'least-request': `${origin(port)}/least-request/x`,
      'p2c-ewma': `${origin(port)}/p2c-ewma/x`
    }
    // Each variant's baseline: the same front door and balancer over the all-healthy pool.
    const baselines: Record<string, string> = { 'round-robin': HEALTHY, 'least-request': HEALTHY, 'p2c-ewma': HEALTHY }
    for (const peer of externalPeers()) {
      const name = peer === 'nginx' ? 'nginx least_conn' : 'haproxy leastconn'
      for (const [variant, servers] of [[`${name}, all healthy`, [spare, ...rest]], [name, withSlow]] as const) {
        const started = await startPeer(peer, { servers: [...servers], prefix: '/p', balance: 'least-conn' })
        peers.push(started)
        urls[variant] = `${origin(started.port)}/p/x`
      }
      baselines[name] = `${name}, all healthy`
    }
    const variants = Object.keys(urls)
    const samples: Record<string, SlowSample[]> = Object.fromEntries(variants.map((v) => [v, []]))
    for (let round = 1; round <= settings.rounds; round++) {
      for (const variant of variants) {
        await load(urls[variant]!, { seconds: WARMUP_SECONDS })
        const before = await served(upstreams.child)
        const { result, failed } = await load(urls[variant]!, { seconds: settings.seconds })
        const after = await served(upstreams.child)
        const delta = after.map((n, i) => n - before[i]!)
        // Indexes: 0 slow, 1 the healthy spare, 2.. the rest; the healthy pool never uses 0.
        const healthy = baselines[variant] === undefined
        const pool = healthy ? [1, ...rest.map((_, i) => i + 2)] : [0, ...rest.map((_, i) => i + 2)]
        const total = pool.reduce((sum, i) => sum + delta[i]!, 0)
        const sample: SlowSample = { requests: result.requests.total, p50: result.latency.p50, p99: result.latency.p99, slowShare: healthy ? 0 : delta[0]! / Math.max(1, total), errors: failed }
        samples[variant]!.push(sample)
        console.log(`  slow round ${round}/${settings.rounds} ${variant.padEnd(26)} p50 ${sample.p50} ms, p99 ${sample.p99} ms, slow share ${(sample.slowShare * 100).toFixed(1)}%, ${sample.errors} errors`)
      }
    }
    const figures: Figure[] = []
    for (const variant of variants) {
      const list = samples[variant]!
      const base = baselines[variant]
      const ratioTo = (pick: (s: SlowSample) => number): { name: string, values: number[] } | undefined => base === undefined ? undefined : { name: base, values: samples[base]!.map(pick) }
      figures.push(figure('slow', variant, 'p50', 'ms', list.map((s) => s.p50), ratioTo((s) => s.p50)))
      figures.push(figure('slow', variant, 'p99', 'ms', list.map((s) => s.p99), ratioTo((s) => s.p99)))
      figures.push(figure('slow', variant, 'req/s', 'req/s', list.map((s) => s.requests / settings.seconds), ratioTo((s) => s.requests / settings.seconds)))
      if (base !== undefined) figures.push(figure('slow', variant, 'slow target share', '%', list.map((s) => s.slowShare * 100)))
    }
    return { figures, detail: samples }
  } finally {
    for (const peer of peers) await peer.stop()
  }
}

// budget ----------------------------------------------------------------------------------------

interface BudgetSample { clientRequests: number, upstreamRequests: number, perClientRequest: number }

export async function budget (settings: Settings): Promise<{ figures: Figure[], detail: Record<string, BudgetSample[]> }> {
  const upstreams = await startUpstreams([0, 0, 0], 503)
  const targets = upstreams.ports.map(origin)
  const retry = { retries: 2, on: ['5xx' as const] }
  const { port } = await startGateway({
    none: { targets, outlier: false, retry: { ...retry, budget: { ratio: 1, minPerSecond: 1_000_000 } } },
    budget: { targets, outlier: false, retry: { ...retry, budget: { ratio: 0.2, minPerSecond: 5 } } }
  })
  const variants: Record<string, string> = { 'no budget': 'none', 'budget 0.2, min 5/s (default)': 'budget' }
  // Failed tries are retried after a backoff, so a client request takes a while: a few hundred are enough.
  const amount = settings.quick ? 100 : 300
  const samples: Record<string, BudgetSample[]> = Object.fromEntries(Object.keys(variants).map((v) => [v, []]))
  for (let round = 1; round <= settings.rounds; round++) {
    for (const [variant, pool] of Object.entries(variants)) {
      const before = await served(upstreams.child)
      const { result } = await load(`${origin(port)}/${pool}/x`, { amount })
      const after = await served(upstreams.child)
      const tries = after.reduce((sum, n, i) => sum + n - before[i]!, 0)
      const sample = { clientRequests: result.requests.total, upstreamRequests: tries, perClientRequest: tries / Math.max(1, result.requests.total) }
      samples[variant]!.push(sample)
      console.log(`  budget round ${round}/${settings.rounds} ${variant.padEnd(29)} ${sample.upstreamRequests} upstream requests for ${sample.clientRequests} client requests`)
    }
  }
  const none = samples['no budget']!.map((s) => s.perClientRequest)
  const figures = Object.keys(variants).map((variant) => figure('budget', variant, 'upstream requests per client request', '',
    samples[variant]!.map((s) => s.perClientRequest), variant === 'no budget' ? undefined : { name: 'no budget', values: none }))
  return { figures, detail: samples }
}

await scenarioEntry(import.meta.url, 'kill,slow,budget', async (role) => { await (role === 'gateway' ? runGatewayChild() : runUpstreamsChild()) })
