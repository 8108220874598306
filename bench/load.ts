// Under load: the front doors of bench/doors.ts at 1, 50 and 500 concurrent connections, small
// (200 B) and larger (64 KB) answers, with keep-alive and without (a new connection for every
// request). For each cell of that matrix and each variant: req/s, p50 and p99 latency and the
// proxy process's CPU time per response, each as a ratio to fastify-floor measured in the same
// cell and round.
//
//   npm run bench:load                                   the full matrix (about 4 minutes)
//   BENCH_CONNECTIONS=50,500 BENCH_SIZES=65536 BENCH_KEEPALIVE=on npm run bench:load
//   BENCH_VARIANTS=fastify-floor,everything BENCH_SECONDS=5 BENCH_ROUNDS=3 npm run bench:load
//
// Knobs (environment, comma-separated lists): BENCH_CONNECTIONS [1,50,500], BENCH_SIZES in
// bytes [200,65536], BENCH_KEEPALIVE [on,off], BENCH_VARIANTS [node-floor, fastify-floor,
// http-proxy, defaults, everything; fastify-floor is always added], BENCH_SECONDS of load per
// measurement [2], BENCH_ROUNDS [1]. Writes bench/results/load-<commit>-<date>.json.
//
// The load generator is undici in this process, closed-loop: each connection sends its next
// request when the last answer has been read to its end; without keep-alive each request asks
// `Connection: close` and the next one opens a new connection. Latency is from sending to the
// answer's last byte. The generator shares the machine with the proxy, the same for every
// variant of a cell; CPU per response is the proxy's own (from /proc) and moves least.
import {
  WARMUP_SECONDS, closedLoop, commitOf, cpuMicros, figure, formatSpread, formatTable, percentile,
  positiveInteger, startChild, startWatchdog, stopChildren, writeResults, type Figure, type LoadShape
} from './harness.js'
import { DOORS, FLOOR, PREFIX, chosenDoors, type Door, doorBenchEntry } from './doors.js'

const DEFAULT_VARIANTS: Door[] = ['node-floor', 'fastify-floor', 'http-proxy', 'defaults', 'everything']
const FIRST_WARMUP_SECONDS = 2

type Cell = LoadShape
interface Sample { requestsPerSecond: number, p50: number, p99: number, cpuPerResponse: number }

function list (name: string, fallback: string): string[] {
  const raw = process.env[name]
  return (raw === undefined || raw === '' ? fallback : raw).split(',').filter((item) => item !== '')
}

function numbers (name: string, fallback: string): number[] {
  return list(name, fallback).map((raw) => {
    const value = Number(raw)
    if (!Number.isInteger(value) || value < 1) throw new Error(`${name}: expected positive integers, got "${raw}"`)
    return value
  })
}

function cellName (cell: Cell): string {
  return `${cell.connections} conn, ${cell.bytes >= 1024 ? `${cell.bytes / 1024} KB` : `${cell.bytes} B`}, ${cell.keepAlive ? 'keep-alive' : 'close'}`
}

// ---------------------------------------------------------------------------------------------
// Parent: the load generator.

async function measure (port: number, pid: number, cell: Cell, seconds: number): Promise<Sample> {
  await closedLoop(port, `${PREFIX}/bytes/${cell.bytes}`, cell, WARMUP_SECONDS)
  const cpuBefore = cpuMicros([pid])
  const { latencies, responses, ms } = await closedLoop(port, `${PREFIX}/bytes/${cell.bytes}`, cell, seconds)
  const cpu = cpuMicros([pid]) - cpuBefore
  const sorted = latencies.sort((a, b) => a - b)
  return { requestsPerSecond: responses / ms * 1000, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), cpuPerResponse: cpu / responses }
}

async function main (): Promise<void> {
  const connections = numbers('BENCH_CONNECTIONS', '1,50,500')
  const sizes = numbers('BENCH_SIZES', '200,65536')
  const keepAlives = list('BENCH_KEEPALIVE', 'on,off').map((raw) => {
    if (raw !== 'on' && raw !== 'off') throw new Error(`BENCH_KEEPALIVE: expected on and/or off, got "${raw}"`)
    return raw === 'on'
  })
  const chosen = chosenDoors(DOORS, DEFAULT_VARIANTS)
  if (!chosen.includes(FLOOR)) chosen.unshift(FLOOR)
  const seconds = positiveInteger('BENCH_SECONDS', 2)
  const rounds = positiveInteger('BENCH_ROUNDS', 1)
  const cells: Cell[] = connections.flatMap((c) => sizes.flatMap((bytes) => keepAlives.map((keepAlive) => ({ connections: c, bytes, keepAlive }))))
  const estimate = rounds * cells.length * chosen.length * (seconds + WARMUP_SECONDS) + chosen.length * FIRST_WARMUP_SECONDS + 10
  // Bounded: twice the estimate, and the start-ups, before the watchdog ends the run.
  startWatchdog((estimate * 2 + 120) * 1000)
  const commit = commitOf()
  console.log(`bench:load at ${commit}: ${cells.length} cell(s) × ${chosen.length} variant(s) × ${rounds} round(s), ${seconds} s each: about ${Math.ceil(estimate / 60)} min`)

  const { ports: upstreamPorts } = await startChild(import.meta.url, 'upstreams')
  const doors: Array<{ variant: Door, port: number, pid: number }> = []
  for (const variant of chosen) {
    const { child, ports } = await startChild(import.meta.url, variant, { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') })
    doors.push({ variant, port: ports[0]!, pid: child.pid! })
  }

  // The doors start cold (JIT, connection pools): unmeasured load on each before the first cell.
  for (const door of doors) await closedLoop(door.port, `${PREFIX}/bytes/200`, { connections: 50, bytes: 200, keepAlive: true }, FIRST_WARMUP_SECONDS)

  const samples = new Map<string, Sample[]>()
  const key = (cell: Cell, variant: Door): string => `${cellName(cell)} | ${variant}`
  for (let round = 1; round <= rounds; round++) {
    for (const cell of cells) {
      for (const door of doors) {
        const sample = await measure(door.port, door.pid, cell, seconds)
        samples.set(key(cell, door.variant), [...(samples.get(key(cell, door.variant)) ?? []), sample])
        console.log(`  ${rounds > 1 ? `round ${round} ` : ''}${cellName(cell).padEnd(28)} ${door.variant.padEnd(13)} ${Math.round(sample.requestsPerSecond)} req/s, ` +
          `p50 ${sample.p50.toFixed(2)} ms, p99 ${sample.p99.toFixed(2)} ms, ${Math.round(sample.cpuPerResponse)} µs CPU/response`)
      }
    }
  }
  await stopChildren()

  const figures: Figure[] = []
  const rows: string[][] = [['cell', 'variant', 'req/s', 'p50 ms', 'p99 ms', 'CPU/resp µs', 'p50 ×', 'p99 ×', 'CPU ×']]
  for (const cell of cells) {
    const floor = samples.get(key(cell, FLOOR))!
    for (const { variant } of doors) {
      const mine = samples.get(key(cell, variant))!
      const of = (list: Sample[], pick: (s: Sample) => number): number[] => list.map(pick)
      const against = (pick: (s: Sample) => number): { name: string, values: number[] } | undefined => variant === FLOOR ? undefined : { name: FLOOR, values: of(floor, pick) }
      const made = (['requestsPerSecond', 'p50', 'p99', 'cpuPerResponse'] as const).map((metric) =>
        figure(`load: ${cellName(cell)}`, variant, metric === 'requestsPerSecond' ? 'req/s' : metric === 'cpuPerResponse' ? 'CPU/response' : metric,
          metric === 'requestsPerSecond' ? 'req/s' : metric === 'cpuPerResponse' ? 'µs' : 'ms', of(mine, (s) => s[metric]), against((s) => s[metric])))
      figures.push(...made)
      const [rps, p50, p99, cpu] = made as [Figure, Figure, Figure, Figure]
      const ratio = (f: Figure): string => f.ratio === null ? '' : formatSpread(f.ratio, 2)
      rows.push([cellName(cell), variant, formatSpread(rps.value, 0), formatSpread(p50.value, 2), formatSpread(p99.value, 2), formatSpread(cpu.value, 0), ratio(p50), ratio(p99), ratio(cpu)])
    }
  }
  console.log(`\n${rounds > 1 ? `Median (min–max) of ${rounds} rounds; r` : 'R'}atios (×) to ${FLOOR} in the same cell and round.\n`)
  console.log(formatTable(rows))
  const date = new Date().toISOString()
  const report = { date, commit, node: process.version, settings: { connections, sizes, keepAlive: keepAlives, variants: chosen, seconds, rounds }, figures }
  console.log(`\nwrote ${await writeResults(`load-${commit}-${date.slice(0, 19).replace(/:/g, '-')}Z.json`, report)}`)
}

await doorBenchEntry(main)
