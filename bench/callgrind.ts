// What a callgrind dump of a Node process spent its instructions on, by kind: V8's optimising
// compiler, JIT-compiled JavaScript, V8's builtins, its runtime, the garbage collector, Node's
// C++ (libuv, llhttp), libc. bench:instructions reads it from every dump it takes; by hand it
// summarises the dumps that `BENCH_KEEP=dir npm run bench:instructions` keeps:
//
//   node --import tsx bench/callgrind.ts .prof/callgrind/callgrind.everything.1234 [more dumps]
//
// Why the compiler is its own kind: even after the warm-up, V8 goes on compiling (and
// recompiling after a deoptimisation) in the counted window, and how much falls there varies
// from run to run. It is a start-up cost, not a per-response one: `steady` leaves it out.
// JIT-compiled functions have no symbols under valgrind (V8 does not tell it their names); for
// which JavaScript functions cost what, use bench:profile (node --cpu-prof).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { basename } from 'node:path'
import { formatTable, isEntry } from './harness.js'

const run = promisify(execFile)

export const KINDS = ['compiler', 'javascript', 'builtins', 'v8 runtime', 'gc', 'node', 'libc', 'other'] as const
export type Kind = typeof KINDS[number]

/** The kind of one `file:function [object]` line of callgrind_annotate. */
export function kindOf (fn: string): Kind {
  if (/v8::internal::(compiler|maglev|baseline)::|OptimizingCompile|Turbofan|Pipeline/.test(fn)) return 'compiler'
  if (/^\?\?\?:0x[0-9a-f]+ \[\?\?\?\]/.test(fn)) return 'javascript'
  if (/Heap|Scaveng|MarkCompact|Sweep|Marking|Evacuat|RootVisitor|IterateObjectCache|VisitRoot|RememberedSet|GCTracer|MemoryAllocator|MemoryChunk/.test(fn)) return 'gc'
  if (fn.includes('Builtins_')) return 'builtins'
  if (fn.includes('v8::')) return 'v8 runtime'
  if (/node::|uv_|uv__|llhttp|nghttp|ares_/.test(fn)) return 'node'
  if (/libc\.so|libstdc\+\+|libm\.so|ld-linux/.test(fn)) return 'libc'
  return 'other'
}

export interface Annotated {
  total: number
  byKind: Record<Kind, number>
  /** The functions outside JIT code and the compiler, most expensive first: [name, Ir]. */
  functions: Array<[string, number]>
}

/** Runs callgrind_annotate on `file` and sums its self costs per kind. */
export async function annotate (file: string): Promise<Annotated> {
  const { stdout } = await run('callgrind_annotate', ['--inclusive=no', '--threshold=100', file], { maxBuffer: 256 * 1024 * 1024 })
  const byKind = Object.fromEntries(KINDS.map((kind) => [kind, 0])) as Record<Kind, number>
  const functions: Array<[string, number]> = []
  let total = 0
  for (const line of stdout.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.+)$/.exec(line)
    if (match === null || match[2]!.includes('PROGRAM TOTALS')) continue
    const ir = Number(match[1]!.replace(/,/g, ''))
    const kind = kindOf(match[2]!)
    byKind[kind] += ir
    total += ir
    if (kind !== 'compiler' && kind !== 'javascript') functions.push([match[2]!.replace(/^\?\?\?:/, '').replace(/\s*\[[^\]]*\]$/, ''), ir])
  }
  return { total, byKind, functions }
}

async function main (): Promise<void> {
  const files = process.argv.slice(2)
  if (files.length === 0) throw new Error('usage: node --import tsx bench/callgrind.ts DUMP [DUMP…]')
  for (const file of files) {
    const { total, byKind, functions } = await annotate(file)
    const share = (ir: number): string => `${(ir / total * 100).toFixed(1)}%`
    console.log(`\n${basename(file)}: ${total.toLocaleString('en')} Ir\n`)
    console.log(formatTable([['kind', 'Ir', 'share'], ...KINDS.map((kind) => [kind, byKind[kind].toLocaleString('en'), share(byKind[kind])])]))
    console.log('\n' + formatTable([['function (outside JIT code and the compiler)', 'Ir', 'share'],
      ...functions.slice(0, 25).map(([name, ir]) => [name.slice(0, 110), ir.toLocaleString('en'), share(ir)])]))
  }
}

if (isEntry(import.meta.url)) {
  main().catch((error: unknown) => { console.error(error instanceof Error ? error.message : error); process.exitCode = 1 })
}
