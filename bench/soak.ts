// `npm run bench:soak`: a long run with 10% of the requests failing, to show that the gateway
// neither grows nor leaks. On demand only, not part of `npm run bench`.
//
//   npm run bench:soak                                   1,000,000 requests or 10 minutes, whichever first
//   npm run bench:soak -- --requests 100000 --minutes 2  shorter
//
// The gateway (a child process, started with --expose-gc like this one) serves /ok from a pool
// of two healthy node:http upstreams and /dead from a pool of two ports where nothing listens;
// each autocannon connection sends nine requests to /ok, then one to /dead. Before the load,
// after every chunk of it, at the end and after app.close(), the gateway runs a full GC and
// reports its RSS, heap used and active handles (process.getActiveResourcesInfo()). Flat heap and
// handles across chunks, and nothing left after close but the pipes to the parent (IPC, stdout,
// stderr), are the results. Writes bench/results/soak-<date>.json.
import os from 'node:os'
import autocannon from 'autocannon'
import {
  HOST, ask, closedPorts, closeServers, formatTable, isEntry, portOf, runMain, runUpstreams, serveAsChild,
  sleep, startChild, startWatchdog, writeResults
} from './harness.js'

const CONNECTIONS = 50
const CHUNK_SECONDS = 30
/** Of every ten requests, one goes to the pool where nothing listens. */
const FAILING_SHARE = 0.1

interface Memory { cmd: string, rssMB: number, heapUsedMB: number, handles: number, resources: Record<string, number> }

function gcNow (): void {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('soak: run with node --expose-gc (npm run bench:soak does)')
  // Twice: the first pass can leave objects whose finalizers free more.
  gc()
  gc()
}

function memory (cmd: string): Memory {
  gcNow()
  const usage = process.memoryUsage()
  const resources: Record<string, number> = {}
  for (const type of process.getActiveResourcesInfo()) resources[type] = (resources[type] ?? 0) + 1
  return { cmd, rssMB: usage.rss / 2 ** 20, heapUsedMB: usage.heapUsed / 2 ** 20, handles: process.getActiveResourcesInfo().length, resources }
}

async function runChild (role: string): Promise<void> {
  if (role === 'upstreams') {
    const servers = await runUpstreams(['a', 'b'])
    serveAsChild(servers.map(portOf), async () => { await closeServers(servers) })
    return
  }
  gcNow()
  const { default: Fastify } = await import('fastify')
  const { default: upstream } = await import('fastify-upstream')
  const origins = (name: string): string[] => (process.env[name] ?? '').split(',').map((port) => `http://${HOST}:${port}`)
  const app = Fastify({ logger: { level: 'info', file: '/dev/null' } })
  await app.register(upstream, {
    pools: { ok: { targets: origins('BENCH_UPSTREAM_PORTS') }, dead: { targets: origins('BENCH_DEAD_PORTS') } },
    routes: [{ prefix: '/ok', pool: 'ok' }, { prefix: '/dead', pool: 'dead' }]
  })
  await app.listen({ port: 0, host: HOST })
  let closed = false
  process.on('message', (message: { cmd: string }) => {
    if (message.cmd === 'memory') {
      process.send?.(memory('memory'))
    } else if (message.cmd === 'close') {
      closed = true
      app.close().then(() => {
        // Let the sockets' close callbacks run before counting what is left.
        setImmediate(() => { process.send?.(memory('close')) })
      }, (error: Error) => { process.send?.({ cmd: 'close', error: error.message }) })
    }
  })
  serveAsChild([portOf(app.server)], async () => { if (!closed) await app.close() })
}

function flag (name: string, fallback: number): number {
  const i = process.argv.indexOf(name)
  if (i === -1) return fallback
  const value = Number(process.argv[i + 1])
  if (!(value > 0)) throw new Error(`${name}: expected a positive number, got "${process.argv[i + 1]}"`)
  return value
}

async function main (): Promise<void> {
  const maxRequests = flag('--requests', 1_000_000)
  const minutes = flag('--minutes', 10)
  startWatchdog(minutes * 60_000 + 120_000)
  const { ports: upstreamPorts } = await startChild(import.meta.url, 'upstreams')
  const deadPorts = await closedPorts(2)
  const { child: gateway, ports: [port] } = await startChild(import.meta.url, 'gateway', {
    BENCH_UPSTREAM_PORTS: upstreamPorts.join(','),
    BENCH_DEAD_PORTS: deadPorts.join(',')
  })
  console.log(`soak: up to ${maxRequests} requests or ${minutes} min, ${CONNECTIONS} connections, ${FAILING_SHARE * 100}% to a pool that refuses; node ${process.version}`)
  const requests = [...Array.from({ length: 9 }, () => ({ method: 'GET' as const, path: '/ok/x' })), { method: 'GET' as const, path: '/dead/x' }]
  // A short warm-up so that "start" is the gateway with its code loaded and its pools connected.
  await autocannon({ url: `http://${HOST}:${port!}`, connections: CONNECTIONS, amount: 2000, requests })
  const samples: Array<{ at: string, requests: number, ok: number, failed: number, other: number } & Omit<Memory, 'cmd'>> = []
  const note = (at: string, totals: { requests: number, ok: number, failed: number, other: number }, mem: Memory): void => {
    const { cmd: _cmd, ...rest } = mem
    samples.push({ at, ...totals, ...rest })
    console.log(`  ${at.padEnd(12)} ${String(totals.requests).padStart(8)} requests: RSS ${mem.rssMB.toFixed(1)} MB, heap after GC ${mem.heapUsedMB.toFixed(1)} MB, ` +
      `${mem.handles} active handles (${Object.entries(mem.resources).map(([type, n]) => `${n} ${type}`).join(', ')})`)
  }
  const totals = { requests: 0, ok: 0, failed: 0, other: 0 }
  note('start', totals, await ask<Memory>(gateway, { cmd: 'memory' }))
  const started = performance.now()
  let chunk = 0
  while (totals.requests < maxRequests && performance.now() - started < minutes * 60_000) {
    const left = minutes * 60 - (performance.now() - started) / 1000
    const result = await autocannon({ url: `http://${HOST}:${port!}`, connections: CONNECTIONS, duration: Math.max(1, Math.min(CHUNK_SECONDS, Math.ceil(left))), requests })
    const counts = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([status, stats]) => [status, stats.count ?? 0]))
    totals.requests += result.requests.total
    totals.ok += counts['200'] ?? 0
    totals.failed += counts['502'] ?? 0
    totals.other += result.requests.total - (counts['200'] ?? 0) - (counts['502'] ?? 0)
    chunk++
    // A moment for the closing client connections to go: what stays is what the gateway keeps.
    await sleep(1000)
    note(`chunk ${chunk}`, totals, await ask<Memory>(gateway, { cmd: 'memory' }))
  }
  const end = samples[samples.length - 1]!
  const closedMemory = await ask<Memory>(gateway, { cmd: 'close' })
  note('after close', totals, closedMemory)
  const start = samples[0]!
  console.log(`\n${totals.requests} requests in ${((performance.now() - started) / 60_000).toFixed(1)} min: ${totals.ok} × 200, ${totals.failed} × 502 ` +
    `(${((totals.failed / Math.max(1, totals.requests)) * 100).toFixed(1)}%), ${totals.other} other\n`)
  console.log(formatTable([
    ['', 'RSS MB', 'heap after GC MB', 'active handles'],
    ...[['start', start], ['end', end], ['after app.close()', samples[samples.length - 1]!]].map(([name, s]) => {
      const m = s as typeof start
      return [name as string, m.rssMB.toFixed(1), m.heapUsedMB.toFixed(1), String(m.handles)]
    })
  ]))
  console.log(`\nheap after GC, end / start: ${(end.heapUsedMB / start.heapUsedMB).toFixed(2)}; active handles after close: ` +
    `${Object.entries(closedMemory.resources).map(([type, n]) => `${n} ${type}`).join(', ') || 'none'}`)
  const report = {
    date: new Date().toISOString(),
    machine: { node: process.version, platform: `${os.platform()} ${os.release()} ${os.arch()}`, cpus: os.cpus().length },
    settings: { maxRequests, minutes, connections: CONNECTIONS, failingShare: FAILING_SHARE, chunkSeconds: CHUNK_SECONDS },
    totals,
    samples
  }
  console.log(`\nwrote ${await writeResults(`soak-${new Date().toISOString().slice(0, 19).replace(/:/g, '-')}Z.json`, report)}`)
}

if (isEntry(import.meta.url)) {
  const role = process.argv[2]
  if (role !== undefined && !role.startsWith('--')) await runChild(role)
  else await runMain(main)
}
