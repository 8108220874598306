// Where a front door's CPU time goes: runs one variant of bench/doors.ts under
// `node --cpu-prof`, drives closed-loop load through it, and sums the profile's self time per
// function and per package (fastify-upstream's own code, fastify, undici, Node's internals,
// GC). The profile itself stays in .prof/ for Chrome DevTools or speedscope.
//
//   npm run bench:profile                         everything, 10 s, 50 connections
//   BENCH_VARIANTS=fastify-floor,defaults,everything BENCH_SECONDS=20 npm run bench:profile
//
// Knobs: BENCH_VARIANTS [everything], BENCH_SECONDS [10], BENCH_CONNECTIONS [50], BENCH_SIZES
// answer bytes [200], BENCH_TOP functions listed [25]. A sampling profile moves with the
// machine's load; compare shares of one profile, and instruction counts (bench:instructions)
// across commits.
import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { WARMUP_SECONDS, closedLoop, formatTable, positiveInteger, startChild, startWatchdog, stopChildren } from './harness.js'
import { DOORS, PREFIX, chosenDoors, doorBenchEntry } from './doors.js'

const PROFILES = fileURLToPath(new URL('../.prof/', import.meta.url))

interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number }
interface CpuProfile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

/** Which part of the process a frame belongs to. */
export function packageOf (url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  if (url.startsWith('node:')) return 'node'
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
  if (inModules !== null) return inModules[1]!
  if (/\/(dist|lib)\//.test(url)) return 'fastify-upstream'
  if (/\/bench\//.test(url)) return 'bench'
  return url
}

/** Self time per function and per package, in ms, from the samples (time deltas) of a profile. */
export function selfTimes (profile: CpuProfile): { functions: Map<string, number>, packages: Map<string, number>, total: number } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const functions = new Map<string, number>()
  const packages = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)!
    const ms = (profile.timeDeltas[i] ?? 0) / 1000
    const { functionName, url, lineNumber } = node.callFrame
    if (functionName === '(idle)') return
    total += ms
    const file = url.replace(/^.*\/(node_modules|dist|lib)\//, '$1/')
    const name = `${functionName === '' ? '(anonymous)' : functionName} ${file === '' ? '' : `${file}:${lineNumber + 1}`}`.trim()
    functions.set(name, (functions.get(name) ?? 0) + ms)
    const pkg = packageOf(url, functionName)
    packages.set(pkg, (packages.get(pkg) ?? 0) + ms)
  })
  return { functions, packages, total }
}

function share (entries: Map<string, number>, total: number, top: number): string[][] {
  return [...entries].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, ms]) => [name, ms.toFixed(0), `${(ms / total * 100).toFixed(1)}%`])
}

async function main (): Promise<void> {
  const chosen = chosenDoors(DOORS, ['everything'])
  const seconds = positiveInteger('BENCH_SECONDS', 10)
  const connections = positiveInteger('BENCH_CONNECTIONS', 50)
  const bytes = positiveInteger('BENCH_SIZES', 200)
  const top = positiveInteger('BENCH_TOP', 25)
  startWatchdog((chosen.length * (seconds + WARMUP_SECONDS + 60)) * 1000)
  for (const variant of chosen) {
    const dir = join(PROFILES, variant)
    await rm(dir, { recursive: true, force: true })
    await mkdir(dir, { recursive: true })
    const { ports: upstreamPorts } = await startChild(import.meta.url, 'upstreams')
    const { ports } = await startChild(import.meta.url, variant, { BENCH_UPSTREAM_PORTS: upstreamPorts.join(',') }, {
      execArgv: [...process.execArgv, '--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-interval', '250']
    })
    const shape = { connections, bytes, keepAlive: true }
    const path = `${PREFIX}/bytes/${bytes}`
    await closedLoop(ports[0]!, path, shape, WARMUP_SECONDS)
    const { responses } = await closedLoop(ports[0]!, path, shape, seconds)
    // The profile is written as the child exits.
    await stopChildren()
    const file = (await readdir(dir)).find((name) => name.endsWith('.cpuprofile'))
    if (file === undefined) throw new Error(`${variant}: no .cpuprofile in ${dir}`)
    const { functions, packages, total } = selfTimes(JSON.parse(await readFile(join(dir, file), 'utf8')) as CpuProfile)
    console.log(`\n${variant}: ${responses} responses, ${total.toFixed(0)} ms busy in the profile (start-up and warm-up included), ${join(dir, file)}\n`)
    console.log(formatTable([['package', 'self ms', 'share'], ...share(packages, total, 20)]))
    console.log('\n' + formatTable([['function', 'self ms', 'share'], ...share(functions, total, top)]))
  }
}

await doorBenchEntry(main)
