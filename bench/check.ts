// The regression guard: compares the newest `bench:instructions` results with the one recorded
// before it and fails when a variant costs more than 5% more per response.
//
//   npm run bench:check                        runs bench:instructions, then compares
//   node --import tsx bench/check.ts           compares the newest two results files
//   node --import tsx bench/check.ts NEW OLD   compares these two
//   BENCH_THRESHOLD=3 ...                      fails past +3% instead
//
// What is compared: a gateway variant's ratio to fastify-floor when both runs measured the floor
// (a Node, Fastify or undici upgrade then moves the floor and the gateway alike, and only what
// the gateway adds counts), its instructions per response otherwise; a floor's own count is
// shown, never failed on. Runs with different request counts compare badly (warm-up and GC
// fall differently): the check says so.
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { formatTable, isEntry } from './harness.js'
import { FLOOR } from './doors.js'
import type { InstructionsReport } from './instructions.js'

const RESULTS = fileURLToPath(new URL('./results/', import.meta.url))
const FLOORS = new Set(['node-floor', 'fastify-floor'])

export interface Verdict { variant: string, measure: 'vs floor' | 'Ir/response' | 'floor', before: number, after: number, change: number, failed: boolean }

/** The verdict per variant that both runs measured. Pure: the tests and the CLI share it. */
export function compare (before: InstructionsReport, after: InstructionsReport, thresholdPercent: number): Verdict[] {
  const verdicts: Verdict[] = []
  for (const [variant, irAfter] of Object.entries(after.perResponse)) {
    const irBefore = before.perResponse[variant as keyof InstructionsReport['perResponse']]
    if (irBefore === undefined || irAfter === undefined) continue
    const floor = FLOORS.has(variant)
    const ratioBefore = before.vsFloor?.[variant as keyof InstructionsReport['vsFloor']]
    const ratioAfter = after.vsFloor?.[variant as keyof InstructionsReport['vsFloor']]
    const byRatio = !floor && ratioBefore !== undefined && ratioAfter !== undefined
    const [from, to] = byRatio ? [ratioBefore, ratioAfter] : [irBefore, irAfter]
    const change = to / from - 1
    verdicts.push({ variant, measure: floor ? 'floor' : byRatio ? 'vs floor' : 'Ir/response', before: from, after: to, change, failed: !floor && change * 100 > thresholdPercent })
  }
  return verdicts
}

/** bench/results/instructions-*.json, oldest first (by the date each records). */
function recorded (): Array<{ file: string, report: InstructionsReport }> {
  return readdirSync(RESULTS).filter((name) => /^instructions-.+\.json$/.test(name) && name !== 'instructions-latest.json')
    .map((name) => ({ file: `bench/results/${name}`, report: JSON.parse(readFileSync(RESULTS + name, 'utf8')) as InstructionsReport }))
    .filter(({ report }) => typeof report.commit === 'string')
    .sort((a, b) => a.report.date.localeCompare(b.report.date))
}

function load (path: string): { file: string, report: InstructionsReport } {
  return { file: path, report: JSON.parse(readFileSync(path, 'utf8')) as InstructionsReport }
}

function main (): void {
  const threshold = Number(process.env.BENCH_THRESHOLD ?? '5')
  const [newPath, oldPath] = process.argv.slice(2)
  const all = recorded()
  const after = newPath !== undefined ? load(newPath) : all.at(-1)
  const before = oldPath !== undefined ? load(oldPath) : all.filter((r) => r.file !== after?.file).at(-1)
  if (after === undefined || before === undefined) throw new Error('bench:check: needs two results files in bench/results (run npm run bench:instructions)')
  console.log(`bench:check: ${after.file} (${after.report.commit}) against ${before.file} (${before.report.commit}), failing past +${threshold}%`)
  const settings = (r: InstructionsReport): string => `${r.settings.warmup}/${r.settings.requests}/${r.settings.connections}, node ${r.node}`
  if (settings(before.report) !== settings(after.report)) {
    console.log(`  note: different settings (warm-up/requests/connections): ${settings(before.report)} against ${settings(after.report)}`)
  }
  const verdicts = compare(before.report, after.report, threshold)
  if (verdicts.length === 0) throw new Error('bench:check: the two runs have no variant in common')
  const digits = (v: Verdict): number => v.measure === 'vs floor' ? 3 : 0
  console.log('\n' + formatTable([
    ['variant', 'measure', 'before', 'after', 'change', ''],
    ...verdicts.map((v) => [v.variant, v.measure === 'vs floor' ? `vs ${FLOOR}` : v.measure, v.before.toFixed(digits(v)), v.after.toFixed(digits(v)),
      `${v.change >= 0 ? '+' : ''}${(v.change * 100).toFixed(1)}%`, v.failed ? 'FAIL' : 'ok'])
  ]))
  const failed = verdicts.filter((v) => v.failed)
  if (failed.length > 0) {
    console.error(`\nbench:check: ${failed.map((v) => v.variant).join(', ')} past +${threshold}%`)
    process.exitCode = 1
  }
}

if (isEntry(import.meta.url)) main()
