// The cost of a WebSocket tunnel through fastify-upstream, per message, against a direct
// connection to the same upstream, in the same run:
//
//   direct            ws client → ws echo upstream
//   node-pipe         ws client → a bare node:net proxy (socket.pipe both ways) → upstream
//   fastify-upstream  ws client → fastify-upstream (websocket route) → ws echo upstream
//
// node-pipe is the floor for any Node process on the path: what copying the bytes costs with
// nothing else (no HTTP, no handshake, no pool).
//
// Run with `npm run bench:websocket`. Knobs (environment): BENCH_ROUND_TRIPS echo round trips
// per measurement [10000], BENCH_CONNECTIONS connections sharing them, each sending its next
// message when the last came back [1], BENCH_MESSAGE_BYTES [64], BENCH_ROUNDS repeats of the
// whole round [3]. Prints medians and the ratio, and writes bench/results/websocket-latest.json.
//
// Once the handshake is done the gateway only copies bytes, so what it adds to a message is
// two socket hops and one more process on the path. With one connection every message waits
// for the last, so round trips per second is the inverse of the per-message latency.
//
// The client runs here; the upstream and the gateway each in a child process (see harness.ts:
// in one process they would share one event loop, and the figures would measure mostly that).
import os from 'node:os'
import net from 'node:net'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import type { ChildProcess } from 'node:child_process'
import { createServer } from 'node:http'
import WebSocket, { WebSocketServer } from 'ws'
import {
  HOST, ask, formatTable, median, portOf, positiveInteger, closeServers, runMain, serveAsChild, startChild,
  startWatchdog, writeResults
} from './harness.js'

const PREFIX = '/live'

type Role = 'upstream' | 'node-pipe' | 'gateway'
type Variant = 'direct' | 'node-pipe' | 'fastify-upstream'
const VARIANTS: Variant[] = ['direct', 'node-pipe', 'fastify-upstream']

/** What a proxy child answers to `report`: its CPU time since the last `reset`, in µs. */
interface CpuTotal { cmd: 'report', cpu: number }

function meterCpu (): void {
  let cpuFrom = process.cpuUsage()
  process.on('message', (message: { cmd: string }) => {
    if (message.cmd === 'reset') {
      cpuFrom = process.cpuUsage()
      process.send?.({ cmd: 'reset' })
    } else if (message.cmd === 'report') {
      const cpu = process.cpuUsage(cpuFrom)
      process.send?.({ cmd: 'report', cpu: cpu.user + cpu.system } satisfies CpuTotal)
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Children: the servers.

async function runChild (role: Role): Promise<void> {
  if (role === 'upstream') {
    const server = createServer((_request, response) => response.end('websocket only'))
    // No compression: the figures are about the tunnel, not deflate.
    const wss = new WebSocketServer({ server, perMessageDeflate: false })
    wss.on('connection', (socket) => socket.on('message', (data, binary) => socket.send(data, { binary })))
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
    serveAsChild([portOf(server)], async () => {
      for (const client of wss.clients) client.terminate()
      await closeServers([server])
    })
    return
  }
  const upstreamPort = Number(process.env.BENCH_UPSTREAM_PORT)
  meterCpu()
  if (role === 'node-pipe') {
    const server = net.createServer((client) => {
      const upstream = net.connect(upstreamPort, HOST)
      for (const socket of [client, upstream]) {
        socket.setNoDelay(true)
        socket.on('error', () => {})
        socket.once('close', () => { client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream)
      upstream.pipe(client)
    })
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
    serveAsChild([(server.address() as net.AddressInfo).port], async () => { await new Promise((resolve) => server.close(resolve)) })
    return
  }
  const { default: Fastify } = await import('fastify')
  const { default: upstream } = await import('fastify-upstream')
  const app = Fastify({ logger: false })
  await app.register(upstream, {
    pools: { live: { targets: [`http://${HOST}:${upstreamPort}`] } },
    routes: [{ prefix: PREFIX, pool: 'live', websocket: true }]
  })
  await app.listen({ port: 0, host: HOST })
  serveAsChild([portOf(app.server)], async () => { await app.close() })
}

// ---------------------------------------------------------------------------------------------
// Parent: the client.

async function open (url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false })
  ws.on('error', () => {})
  await once(ws, 'open')
  return ws
}

/** `count` echo round trips on `ws`, one at a time; checks every echo. */
async function roundTrips (ws: WebSocket, count: number, message: Buffer): Promise<void> {
  for (let i = 0; i < count; i++) {
    ws.send(message)
    const [reply] = await once(ws, 'message') as [Buffer]
    if (reply.length !== message.length) throw new Error(`echo of ${message.length} bytes came back as ${reply.length}`)
  }
}

interface Sample {
  roundTripsPerSecond: number
  /** Mean time of one round trip, in µs. */
  meanMicros: number
  /** The proxy process's CPU time per round trip, in µs (null for direct: no proxy). */
  cpuPerRoundTrip: number | null
}

async function measure (url: string, total: number, connections: number, message: Buffer, meter: ChildProcess | null): Promise<Sample> {
  const sockets = await Promise.all(Array.from({ length: connections }, async () => await open(url)))
  try {
    // Warm-up: JIT and connection setup happen here, not in the figures.
    await Promise.all(sockets.map(async (ws) => { await roundTrips(ws, Math.ceil(1000 / connections), message) }))
    if (meter !== null) await ask(meter, { cmd: 'reset' })
    const each = Math.ceil(total / connections)
    const startedAt = performance.now()
    await Promise.all(sockets.map(async (ws) => { await roundTrips(ws, each, message) }))
    const seconds = (performance.now() - startedAt) / 1000
    const cpu = meter === null ? null : await ask<CpuTotal>(meter, { cmd: 'report' })
    const done = each * connections
    return {
      roundTripsPerSecond: done / seconds,
      meanMicros: (seconds * 1e6 * connections) / done,
      cpuPerRoundTrip: cpu === null ? null : cpu.cpu / done
    }
  } finally {
    await Promise.all(sockets.map(async (ws) => {
      const closed = once(ws, 'close')
      ws.close()
      await closed
    }))
  }
}

async function main (): Promise<void> {
  const total = positiveInteger('BENCH_ROUND_TRIPS', 10_000)
  const connections = positiveInteger('BENCH_CONNECTIONS', 1)
  const bytes = positiveInteger('BENCH_MESSAGE_BYTES', 64)
  const rounds = positiveInteger('BENCH_ROUNDS', 3)
  // Generous: a loaded 2-core machine does a few thousand round trips a second at worst.
  startWatchdog(rounds * VARIANTS.length * (total / 500 + 10) * 1000 + 60_000)

  const { ports: [upstreamPort] } = await startChild(import.meta.url, 'upstream')
  const env = { BENCH_UPSTREAM_PORT: String(upstreamPort) }
  const [pipe, gateway] = await Promise.all([startChild(import.meta.url, 'node-pipe', env), startChild(import.meta.url, 'gateway', env)])
  const urls: Record<Variant, string> = {
    direct: `ws://${HOST}:${upstreamPort}/echo`,
    'node-pipe': `ws://${HOST}:${pipe.ports[0]}/echo`,
    'fastify-upstream': `ws://${HOST}:${gateway.ports[0]}${PREFIX}/echo`
  }
  const meters: Record<Variant, ChildProcess | null> = { direct: null, 'node-pipe': pipe.child, 'fastify-upstream': gateway.child }
  const message = Buffer.alloc(bytes, 'x')

  console.log(`bench: ${rounds} round(s) of ${VARIANTS.join(' → ')}, ${total} echo round trips of ${bytes} bytes each ` +
    `over ${connections} connection(s), node ${process.version}, ${os.cpus().length} CPU(s)`)
  const samples: Record<Variant, Sample[]> = { direct: [], 'node-pipe': [], 'fastify-upstream': [] }
  for (let round = 1; round <= rounds; round++) {
    for (const variant of VARIANTS) {
      const sample = await measure(urls[variant], total, connections, message, meters[variant])
      samples[variant].push(sample)
      console.log(`  round ${round}/${rounds} ${variant.padEnd(16)} ${Math.round(sample.roundTripsPerSecond)} round trips/s, ` +
        `${Math.round(sample.meanMicros)} µs each` + (sample.cpuPerRoundTrip === null ? '' : `, ${Math.round(sample.cpuPerRoundTrip)} µs proxy CPU each`))
    }
  }

  const medians = Object.fromEntries(VARIANTS.map((variant) => {
    const list = samples[variant]
    return [variant, {
      roundTripsPerSecond: median(list.map((s) => s.roundTripsPerSecond)),
      meanMicros: median(list.map((s) => s.meanMicros)),
      cpuPerRoundTrip: meters[variant] === null ? null : median(list.map((s) => s.cpuPerRoundTrip ?? 0))
    }]
  })) as Record<Variant, Sample>
  const ratio = medians['fastify-upstream'].roundTripsPerSecond / medians.direct.roundTripsPerSecond
  const pipeRatio = medians['fastify-upstream'].roundTripsPerSecond / medians['node-pipe'].roundTripsPerSecond
  const addedMicros = medians['fastify-upstream'].meanMicros - medians.direct.meanMicros

  console.log(`\nMedian of ${rounds} round(s), ${total} round trips each:\n`)
  console.log(formatTable([
    ['variant', 'round trips/s', 'µs each', 'proxy CPU µs each'],
    ...VARIANTS.map((variant) => {
      const m = medians[variant]
      return [variant, Math.round(m.roundTripsPerSecond).toString(), Math.round(m.meanMicros).toString(),
        m.cpuPerRoundTrip === null ? '-' : Math.round(m.cpuPerRoundTrip).toString()]
    })
  ]))
  console.log(`\nfastify-upstream/direct (round trips/s): ${ratio.toFixed(2)}; the tunnel adds ${Math.round(addedMicros)} µs per round trip`)
  console.log(`fastify-upstream/node-pipe (round trips/s): ${pipeRatio.toFixed(2)}`)

  const report = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpus: os.cpus().length,
    settings: { roundTrips: total, connections, messageBytes: bytes, rounds },
    medians,
    ratio: { 'fastify-upstream/direct': ratio, 'fastify-upstream/node-pipe': pipeRatio },
    addedMicrosPerRoundTrip: addedMicros,
    rounds: samples
  }
  console.log(`\nwrote ${await writeResults('websocket-latest.json', report)}`)
}

const role = process.argv[2] as Role | undefined
if (role !== undefined) {
  await runChild(role)
} else {
  await runMain(main)
}
