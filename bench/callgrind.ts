// What a callgrind dump of a Node process spent its instructions on, by kind: V8's optimising
// compiler, JIT-compiled JavaScript, V8's builtins, its runtime, the garbage collector, Node's
// C++ (libuv, llhttp), libc. bench:instructions reads it from every dump it takes; by hand it
// summarises the dumps that `BENCH_KEEP=dir npm run bench:instructions` keeps:
//
//   node --import tsx bench/callgrind.ts .prof/callgrind/callgrind.everything.1234 [more dumps]
//   BENCH_BASE=.prof/callgrind/callgrind.fastify-floor.1200 node --import tsx bench/callgrind.ts DUMP
//                                                   what DUMP costs above the floor, per function
//
// Why the compiler and the major GC are kinds of their own: even after the warm-up, V8 goes on
// compiling (and recompiling after a deoptimisation) in the counted window, and a mark-compact
// of the old generation falls in a window of a few thousand requests or not: either can move a
// count by a third from run to run. Neither recurs with each response (a mark-compact's cost
// follows the live heap, not the requests), so bench:instructions leaves both out of its figure
// (NOT_PER_RESPONSE). The scavenges of the young generation stay in: they follow what each
// response allocates.
// JIT-compiled functions have no symbols under valgrind: with `BENCH_KEEP`, bench:instructions
// starts node with --perf-basic-prof and keeps the map V8 writes (`perf-<pid>.map`, the address
// range and name of every piece of code it makes) beside the dump, and each JIT address is named
// through it, so instructions count per JavaScript function and per package (fastify-upstream,
// fastify, undici, node) without the noise of a sampling profiler.
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { basename, dirname, join } from 'node:path'
import { formatTable, isEntry } from './harness.js'

const run = promisify(execFile)

export const KINDS = ['compiler', 'major gc', 'javascript', 'builtins', 'v8 runtime', 'gc', 'node', 'libc', 'other'] as const
/** What bench:instructions leaves out of its figure: work that does not recur with each response. */
export const NOT_PER_RESPONSE: readonly Kind[] = ['compiler', 'major gc']
export type Kind = typeof KINDS[number]

/** The kind of one `file:function [object]` line of callgrind_annotate. */
export function kindOf (fn: string): Kind {
  if (/v8::internal::(compiler|maglev|baseline)::|OptimizingCompile|Turbofan|Pipeline/.test(fn)) return 'compiler'
  if (/^\?\?\?:0x[0-9a-f]+ \[\?\?\?\]/.test(fn)) return 'javascript'
  // Mark-compact: its marking, sweeping and evacuation (and the bitmaps and page sets they use).
  if (/MarkCompact|Marking|Sweep|Evacuat|RecordMigratedSlot|MemoryChunk|ActiveSystemPages|__popcount|MarkBit|FullObjectSlot.*Mark/.test(fn)) return 'major gc'
  if (/Heap|Scaveng|RootVisitor|IterateObjectCache|VisitRoot|RememberedSet|GCTracer|MemoryAllocator/.test(fn)) return 'gc'
  if (fn.includes('Builtins_')) return 'builtins'
  if (fn.includes('v8::')) return 'v8 runtime'
  if (/node::|uv_|uv__|llhttp|nghttp|ares_/.test(fn)) return 'node'
  if (/libc\.so|libstdc\+\+|libm\.so|ld-linux/.test(fn)) return 'libc'
  return 'other'
}

export interface Annotated {
  total: number
  byKind: Record<Kind, number>
  /** JavaScript's (and builtins named through the map) instructions per package. */
  byPackage: Map<string, number>
  /** The functions outside the compiler, most expensive first: [name, Ir]. */
  functions: Array<[string, number]>
}

/** A perf map's code ranges, sorted by start: [start, end, name]. */
type CodeMap = Array<[number, number, string]>

function readCodeMap (file: string): CodeMap {
  return readFileSync(file, 'utf8').split('\n').flatMap((line) => {
    const match = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line)
    if (match === null) return []
    const start = parseInt(match[1]!, 16)
    return [[start, start + parseInt(match[2]!, 16), match[3]!] as [number, number, string]]
  }).sort((a, b) => a[0] - b[0])
}

/** The name of the code at `address`: the last range starting at or before it that holds it. */
function nameAt (map: CodeMap, address: number): string | null {
  let low = 0
  let high = map.length - 1
  let found = -1
  while (low <= high) {
    const middle = (low + high) >> 1
    if (map[middle]![0] <= address) {
      found = middle
      low = middle + 1
    } else {
      high = middle - 1
    }
  }
  return found >= 0 && address < map[found]![1] ? map[found]![2] : null
}

/** The package of a perf-map name (`JS:*onRequest file:///…/node_modules/fastify/lib/x.js:1:2`). */
export function packageOfCode (name: string): string {
  if (name.startsWith('Builtin:') || name.startsWith('BytecodeHandler:')) return '(builtins)'
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(name)
  if (modules !== null) return modules[1]!
  if (/\snode:/.test(name)) return 'node'
  if (/(\s|\/)(dist|lib)\//.test(name)) return 'fastify-upstream'
  if (/\/bench\//.test(name)) return 'bench'
  return '(other)'
}

/**
 * Runs callgrind_annotate on `file` and sums its self costs per kind. A perf map beside the
 * dump (`perf-<pid>.map`, as bench:instructions keeps it) names the JIT-compiled code.
 */
export async function annotate (file: string, inclusive = false): Promise<Annotated> {
  const pid = /\.(\d+)$/.exec(file)?.[1]
  const mapFile = pid === undefined ? null : join(dirname(file), `perf-${pid}.map`)
  const map = mapFile !== null && existsSync(mapFile) ? readCodeMap(mapFile) : null
  const byPackage = new Map<string, number>()
  const { stdout } = await run('callgrind_annotate', [`--inclusive=${inclusive ? 'yes' : 'no'}`, '--threshold=100', file], { maxBuffer: 256 * 1024 * 1024 })
  const byKind = Object.fromEntries(KINDS.map((kind) => [kind, 0])) as Record<Kind, number>
  const functions: Array<[string, number]> = []
  let total = 0
  for (const line of stdout.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.+)$/.exec(line)
    if (match === null || match[2]!.includes('PROGRAM TOTALS')) continue
    const ir = Number(match[1]!.replace(/,/g, ''))
    let name = match[2]!
    let kind = kindOf(name)
    const address = /^\?\?\?:0x([0-9a-f]+) /.exec(name)
    const code = map === null || address === null ? null : nameAt(map, parseInt(address[1]!, 16))
    if (code !== null) {
      name = code
      kind = code.startsWith('Builtin:') || code.startsWith('BytecodeHandler:') ? 'builtins' : 'javascript'
      const pkg = packageOfCode(code)
      byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + ir)
    }
    byKind[kind] += ir
    total += ir
    if (kind !== 'compiler') functions.push([name.replace(/^\?\?\?:/, '').replace(/\s*\[[^\]]*\]$/, '').replace(/file:\/\/\S*?\/(node_modules|dist|lib)\//, '$1/'), ir])
  }
  // Functions of the same name (several compiled versions of one JS function) as one.
  const merged = new Map<string, number>()
  for (const [name, ir] of functions) merged.set(name, (merged.get(name) ?? 0) + ir)
  return { total, byKind, byPackage, functions: [...merged].sort((a, b) => b[1] - a[1]) }
}

async function main (): Promise<void> {
  // BENCH_REQUESTS: the counted requests of the dumps, to print instructions per response.
  const requests = Number(process.env.BENCH_REQUESTS ?? '1')
  const files = process.argv.slice(2)
  if (files.length === 0) throw new Error('usage: [BENCH_REQUESTS=2000] node --import tsx bench/callgrind.ts DUMP [DUMP…]')
  const top = Number(process.env.BENCH_TOP ?? '30')
  // BENCH_INCLUSIVE=fastify-upstream: the functions of that package with what they call (a
  // JavaScript function's inclusive cost takes in the builtins and runtime calls it makes).
  const only = process.env.BENCH_INCLUSIVE
  // BENCH_BASE=<dump of a floor>: what each function costs above it (JIT code is compared by
  // name, so both dumps need their perf maps). Counted requests must match.
  const base = process.env.BENCH_BASE
  const floor = base === undefined || base === '' ? null : new Map((await annotate(base)).functions)
  for (const file of files) {
    if (floor !== null) {
      const { byKind, functions } = await annotate(file)
      const { byKind: floorKinds } = await annotate(base!)
      const per = (ir: number): string => Math.round(ir / requests).toLocaleString('en')
      console.log(`\n${basename(file)} above ${basename(base!)}\n`)
      console.log(formatTable([['kind', 'above', 'floor', 'this'], ...KINDS.map((kind) => [kind, per(byKind[kind] - floorKinds[kind]), per(floorKinds[kind]), per(byKind[kind])])]))
      const above = functions.filter(([name]) => !NOT_PER_RESPONSE.includes(kindOf(name)))
        .map(([name, ir]): [string, number] => [name, ir - (floor.get(name) ?? 0)]).sort((a, b) => b[1] - a[1])
      console.log('\n' + formatTable([['function (outside the compiler and major GC)', 'above'], ...above.slice(0, top).map(([name, ir]) => [name.slice(0, 120), per(ir)])]))
      continue
    }
    if (only !== undefined && only !== '') {
      const { total, functions } = await annotate(file, true)
      console.log(`\n${basename(file)}: inclusive, ${only}'s functions\n`)
      console.log(formatTable([['function', requests === 1 ? 'Ir' : 'Ir/response', 'share'],
        ...functions.filter(([name]) => packageOfCode(name) === only || name.includes(only)).slice(0, top)
          .map(([name, ir]) => [name.slice(0, 120), Math.round(ir / requests).toLocaleString('en'), `${(ir / total * 100).toFixed(1)}%`])]))
      continue
    }
    const { total, byKind, byPackage, functions } = await annotate(file)
    const share = (ir: number): string => `${(ir / total * 100).toFixed(1)}%`
    const per = (ir: number): string => Math.round(ir / requests).toLocaleString('en')
    const unit = requests === 1 ? 'Ir' : 'Ir/response'
    console.log(`\n${basename(file)}: ${per(total)} ${unit}\n`)
    console.log(formatTable([['kind', unit, 'share'], ...KINDS.map((kind) => [kind, per(byKind[kind]), share(byKind[kind])])]))
    if (byPackage.size > 0) {
      console.log('\n' + formatTable([['package (JIT code)', unit, 'share'], ...[...byPackage].sort((a, b) => b[1] - a[1]).map(([name, ir]) => [name, per(ir), share(ir)])]))
    }
    console.log('\n' + formatTable([['function (outside the compiler)', unit, 'share'],
      ...functions.slice(0, top).map(([name, ir]) => [name.slice(0, 120), per(ir), share(ir)])]))
  }
}

if (isEntry(import.meta.url)) {
  main().catch((error: unknown) => { console.error(error instanceof Error ? error.message : error); process.exitCode = 1 })
}
