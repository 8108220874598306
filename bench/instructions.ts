// Instructions per response: what the proxy process executes for one proxied response, counted
// by valgrind's callgrind. Unlike req/s or CPU time, an instruction count does not move with
// whatever else the shared machine is doing, so a change of a few percent shows.
//
// The variants are the front doors of bench/doors.ts: node-floor, fastify-floor, http-proxy,
// defaults, everything (and observe-off on request); every figure is printed as a ratio to
// fastify-floor and node-floor measured in the same run.
//
// Run with `npm run bench:instructions` (needs valgrind). Knobs (environment): BENCH_WARMUP
// requests before counting [8000], BENCH_REQUESTS counted [2000], BENCH_CONNECTIONS concurrent
// keep-alive connections [8], BENCH_VARIANTS comma-separated subset, BENCH_RUNS runs of every
// variant, in turn, each in a fresh process [1] (the figure is their median), BENCH_KEEP a
// directory to keep the callgrind dumps in, with V8's code maps (for bench/callgrind.ts). Writes
// bench/results/instructions-<commit>-<date>.json; `npm run bench:check` compares the newest
// two (bench/check.ts).
//
// How: each proxy runs alone under `valgrind --tool=callgrind` (the upstreams and this load
// generator run natively), uninstrumented until the warm-up (JIT, keep-alive pools) is over;
// then `callgrind_control` turns instrumentation on and zeroes the counters; after the counted
// requests, `callgrind_control -d` dumps them, and the dump's total without V8's compiler and
// major GC (see bench/callgrind.ts), divided by the requests, is the figure. Valgrind runs one thread at a time, so GC helper threads count too: the figure is
// all the work a response costs the process.
import { execFile } from 'node:child_process'
import { copyFile, mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Pool } from 'undici'
import {
  HOST, commitOf, formatTable, median, positiveInteger, startChild, startWatchdog, stopChildren,
  writeResults
} from './harness.js'
import { DOORS, FLOOR, PREFIX, chosenDoors, type Door, doorBenchEntry } from './doors.js'
import { KINDS, NOT_PER_RESPONSE, annotate, type Kind } from './callgrind.js'

const run = promisify(execFile)
const DEFAULT_VARIANTS: Door[] = ['node-floor', 'fastify-floor', 'http-proxy', 'defaults', 'everything']

/** What `bench:instructions` writes, and `bench:check` reads. */
export interface InstructionsReport {
  date: string
  commit: string
  node: string
  settings: { warmup: number, requests: number, connections: number, runs: number }
  /**
   * Instructions per response without V8's optimising compiler and mark-compact GC (see
   * bench/callgrind.ts), the median of the runs: the figure every ratio and bench:check use.
   */
  perResponse: Partial<Record<Door, number>>
  /** Every run's figure. */
  runs: Partial<Record<Door, number[]>>
  /** perResponse over fastify-floor's, when it ran. */
  vsFloor: Partial<Record<Door, number>>
  /** All instructions per response, the compiler's and major GC's included, every run. */
  totals: Partial<Record<Door, number[]>>
  /** Instructions per response by kind, the last run. */
  kinds: Partial<Record<Door, Record<Kind, number>>>
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
      const text = await body.text()
      if (statusCode !== 200) throw new Error(`GET ${PREFIX}/hello answered ${statusCode}: ${text.slice(0, 500)}`)
    }
  }
  await Promise.all(Array.from({ length: connections }, worker))
}

/** The total Ir of the newest callgrind dump in `dir` for `pid`, and the dump's path. */
async function dumpedInstructions (dir: string, pid: number): Promise<{ ir: number, file: string }> {
  const dumps = (await readdir(dir)).filter((name) => name.startsWith(`callgrind.${pid}`)).sort()
  for (const name of dumps.reverse()) {
    const text = await readFile(join(dir, name), 'utf8')
    if (!text.includes('Trigger: Client Request') && !text.includes('Trigger: Program termination') && !/trigger: .*dump/i.test(text)) continue
    const totals = /^(?:summary|totals):\s+(\d+)/m.exec(text)
    if (totals !== null) return { ir: Number(totals[1]), file: join(dir, name) }
  }
  throw new Error(`no callgrind dump for pid ${pid} in ${dir}`)
}

interface Counted { steady: number, total: number, kinds: Record<Kind, number> }

async function measureVariant (variant: Door, upstreamPorts: number[], warmup: number, requests: number, connections: number, dir: string): Promise<Counted> {
  // Instrumentation starts off: start-up and warm-up run several times faster uninstrumented.
  const valgrind = ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${join(dir, 'callgrind.%p')}`, '--dump-line=no', '--compress-strings=no', '--compress-pos=no']
  const keep = process.env.BENCH_KEEP
  const keeping = keep !== undefined && keep !== ''
  // Kept dumps get V8's map of its code, so bench/callgrind.ts can name the JIT-compiled functions.
  const perfMap = keeping ? ['--perf-basic-prof'] : []
  const { child, ports } = await startChild(import.meta.url, variant, { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') }, {
    execPath: 'valgrind',
    execArgv: [...valgrind, process.execPath, ...perfMap, ...process.execArgv],
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
    const { file } = await dumpedInstructions(dir, child.pid!)
    const { total, byKind } = await annotate(file)
    if (keeping) {
      await mkdir(keep, { recursive: true })
      await copyFile(file, join(keep, `callgrind.${variant}.${child.pid!}`))
      await copyFile(`/tmp/perf-${child.pid!}.map`, join(keep, `perf-${child.pid!}.map`))
    }
    const kinds = Object.fromEntries(KINDS.map((kind) => [kind, byKind[kind] / requests])) as Record<Kind, number>
    const steady = NOT_PER_RESPONSE.reduce((left, kind) => left - byKind[kind], total) / requests
    console.log(`  ${variant.padEnd(13)} ${Math.round(steady).toLocaleString('en')} Ir/response without the compiler and major GC, ${Math.round(total / requests).toLocaleString('en')} with them ` +
      `(warm-up ${Math.round((counted - started) / 1000)} s, counted ${Math.round((done - counted) / 1000)} s under valgrind)`)
    return { steady, total: total / requests, kinds }
  } finally {
    await pool.close()
    await stopChildren()
  }
}

async function main (): Promise<void> {
  // 8000: after 2000 the gateway's code was still tiering up (in the baseline tier, compiling)
  // and counted 2.14× the Fastify floor; after 8000, 1.54× (docs/performance.md).
  const warmup = positiveInteger('BENCH_WARMUP', 8000)
  const requests = positiveInteger('BENCH_REQUESTS', 2000)
  const connections = positiveInteger('BENCH_CONNECTIONS', 8)
  const runs = positiveInteger('BENCH_RUNS', 1)
  const chosen = chosenDoors(DOORS, DEFAULT_VARIANTS)
  startWatchdog(runs * chosen.length * 15 * 60_000)
  const dir = join(tmpdir(), `fastify-upstream-callgrind-${process.pid}`)
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const commit = commitOf()

  console.log(`bench: at ${commit}, ${runs} run(s) of ${warmup} warm-up then ${requests} counted requests per variant, ${connections} connections, node ${process.version}`)
  const measured: Partial<Record<Door, number[]>> = {}
  const totals: Partial<Record<Door, number[]>> = {}
  const kinds: Partial<Record<Door, Record<Kind, number>>> = {}
  try {
    // Run by run, every variant in turn: a drift of the machine over the run then touches all alike.
    for (let i = 1; i <= runs; i++) {
      if (runs > 1) console.log(`run ${i}/${runs}`)
      for (const variant of chosen) {
        // The upstreams restart with each variant: stopChildren ends every child.
        const { ports } = await startChild(import.meta.url, 'upstreams')
        const counted = await measureVariant(variant, ports, warmup, requests, connections, dir)
        ;(measured[variant] ??= []).push(counted.steady)
        ;(totals[variant] ??= []).push(counted.total)
        kinds[variant] = counted.kinds
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }

  const perResponse = Object.fromEntries(chosen.map((variant) => [variant, median(measured[variant]!)])) as Partial<Record<Door, number>>
  const ratio = (variant: Door, base: Door): number | undefined => perResponse[base] === undefined ? undefined : perResponse[variant]! / perResponse[base]
  const cell = (value: number | undefined): string => value === undefined ? '-' : value.toFixed(3)
  console.log(`\n${runs > 1 ? `Median of ${runs} runs. ` : ''}Instructions per response without V8's compiler and major GC; ratios to the floors measured in this run:\n` + formatTable([
    ['variant', 'Ir/response', `vs ${FLOOR}`, 'vs node-floor', 'vs http-proxy', 'all'],
    ...chosen.map((variant) => [variant, Math.round(perResponse[variant]!).toLocaleString('en'), cell(ratio(variant, FLOOR)), cell(ratio(variant, 'node-floor')), cell(ratio(variant, 'http-proxy')),
      Math.round(median(totals[variant]!)).toLocaleString('en')])
  ]))
  const vsFloor = Object.fromEntries(chosen.flatMap((variant) => { const r = ratio(variant, FLOOR); return r === undefined ? [] : [[variant, r]] }))
  const date = new Date().toISOString()
  const report: InstructionsReport = { date, commit, node: process.version, settings: { warmup, requests, connections, runs }, perResponse, runs: measured, vsFloor, totals, kinds }
  console.log(`\nwrote ${await writeResults(`instructions-${commit}-${date.slice(0, 19).replace(/:/g, '-')}Z.json`, report)}`)
}

await doorBenchEntry(main, { underValgrind: true })
