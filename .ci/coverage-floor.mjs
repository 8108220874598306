#!/usr/bin/env node
// Holds the coverage floor after a full `tap` run (`npm run test:unit`). tap prints the figures
// (text-summary) and writes .tap/report/coverage-summary.json; the floors are the statements,
// branches, functions and lines numbers in .taprc. tap could enforce them itself, but then
// running one test file (`npx tap test/x.test.ts`) would fail for the coverage the other files
// give, so .taprc allows incomplete coverage and this check runs only after the whole suite.
import { readFile } from 'node:fs/promises'

const root = new URL('..', import.meta.url)
const taprc = await readFile(new URL('.taprc', root), 'utf8')
const summary = JSON.parse(await readFile(new URL('.tap/report/coverage-summary.json', root), 'utf8'))

const failures = []
for (const metric of ['statements', 'branches', 'functions', 'lines']) {
  const floor = Number(new RegExp(`^${metric}: *([0-9.]+)`, 'm').exec(taprc)?.[1] ?? NaN)
  if (Number.isNaN(floor)) {
    failures.push(`${metric}: no floor in .taprc`)
    continue
  }
  const pct = summary.total[metric].pct
  const line = `coverage ${metric}: ${pct}% (floor ${floor}%)`
  if (pct < floor) failures.push(line)
  else console.log(line)
}
if (failures.length > 0) {
  console.error(`coverage under its floor:\n  ${failures.join('\n  ')}\nAdd tests for the new code (npx tap report text lists the uncovered lines).`)
  process.exit(1)
}
