// `npm run bench:fuzz`: the relay's generative test (test/relay-generative.test.ts) at soak
// scale. Same generator, same checks (test/helpers/relay-fuzz.ts); instead of stopping at the
// first failure it runs every case and counts what failed, grouped by kind of problem with one
// replayable example each.
//
//   npm run bench:fuzz                                   100 000 cases, a random seed
//   npm run bench:fuzz -- --cases 20000 --seed 42        fewer, the cases of seed 42
//   FUZZ_ALL=1 npm run bench:fuzz                        the known-bug areas too (KNOWN_RELAY_BUGS)
//
// Prints cases, seed, failures, crashes (uncaughtException / unhandledRejection) and wall time,
// and writes bench/results/relay-fuzz-<date>.json. Exits 1 when any case failed.
import fc from 'fast-check'
import { parseArgs } from 'node:util'
import { writeResults } from './harness.js'
import { KNOWN_RELAY_BUGS, caseArb, describeReport, enabledAreas, runBatch, startRig, type CaseReport } from '../test/helpers/relay-fuzz.js'

const LANES = 8

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { cases: { type: 'string' }, seed: { type: 'string' } } })
  const cases = Number(values.cases ?? process.env.FUZZ_CASES ?? 100_000)
  const seed = Number(values.seed ?? process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
  const enabled = enabledAreas()
  const off = [...KNOWN_RELAY_BUGS].filter((area) => !enabled.has(area))
  console.log(`relay fuzz: ${cases} cases, seed ${seed}, ${LANES} at a time; known-bug areas left out: ${off.length > 0 ? off.join(', ') : 'none'}`)
  const rig = await startRig(LANES)
  const started = Date.now()
  const cpu = process.cpuUsage()
  let ran = 0
  let failed = 0
  /** Problems by kind (numbers and ids taken out), each with its count and first example. */
  const kinds = new Map<string, { count: number, example: string }>()
  const record = (report: CaseReport): void => {
    failed++
    for (const problem of report.problems) {
      const kind = problem.replace(/\d+(-\d+)?/g, '#')
      const entry = kinds.get(kind)
      if (entry === undefined) kinds.set(kind, { count: 1, example: describeReport(report) })
      else entry.count++
    }
  }
  let lastPrint = Date.now()
  // A property that never fails: every case runs, and failures are counted, not shrunk.
  await fc.assert(fc.asyncProperty(fc.array(caseArb(enabled), { minLength: LANES, maxLength: LANES }), async (batch) => {
    const reports = await runBatch(rig, batch, enabled)
    ran += batch.length
    for (const report of reports) if (report.problems.length > 0) record(report)
    if (Date.now() - lastPrint > 10_000) {
      lastPrint = Date.now()
      console.log(`  ${ran} cases, ${failed} failed, ${rig.crashes.length} crashes, ${((Date.now() - started) / 1000).toFixed(0)} s`)
    }
  }), { seed, numRuns: Math.ceil(cases / LANES) })
  const wallMs = Date.now() - started
  const used = process.cpuUsage(cpu)
  await rig.close()
  const result = {
    date: new Date().toISOString(),
    node: process.version,
    seed,
    cases: ran,
    failures: failed,
    crashes: rig.crashes.length,
    wallSeconds: Math.round(wallMs / 100) / 10,
    cpuSeconds: Math.round((used.user + used.system) / 1e5) / 10,
    knownBugAreasLeftOut: off,
    problems: [...kinds].sort((a, b) => b[1].count - a[1].count).map(([kind, { count, example }]) => ({ kind, count, example })),
    crashList: rig.crashes.slice(0, 20)
  }
  console.log(`cases ${result.cases}, seed ${seed}, failures ${failed}, crashes ${result.crashes}, wall ${result.wallSeconds} s, CPU ${result.cpuSeconds} s`)
  for (const { kind, count, example } of result.problems) console.log(`\n${count} × ${kind}\n${example}`)
  const file = await writeResults(`relay-fuzz-${result.date.replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z')}.json`, result)
  console.log(`\nwritten to ${file}`)
  if (failed > 0 || result.crashes > 0) process.exitCode = 1
}

await main()
