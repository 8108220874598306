// `node --import tsx bench/table.ts bench/results/<date>.json`: the results of a run as a Markdown
// table (for docs/benchmarks.md), in the units and with the spreads `npm run bench` prints.
import { readFileSync } from 'node:fs'
import { formatSpread, isEntry, type Figure } from './harness.js'

/** Digits by unit: ratios and milliseconds need decimals, req/s and µs do not. */
export function digits (unit: string): number {
  return unit === 'ms' ? 1 : unit === 'req/s' || unit === 'µs' || unit === 'requests' ? 0 : 2
}

/** One row a figure: scenario, variant, figure (unit), value, ratio, ratio to. */
export function figureRows (figures: Figure[]): string[][] {
  return figures.map((f) => [f.scenario, f.variant, f.unit === '' || f.unit === f.metric ? f.metric : `${f.metric} (${f.unit})`,
    formatSpread(f.value, digits(f.unit)), f.ratio === null ? '' : formatSpread(f.ratio, 2), f.baseline ?? ''])
}

export const FIGURE_HEADER = ['scenario', 'variant', 'figure', 'value', 'ratio', 'ratio to']

function markdown (rows: string[][]): string {
  const line = (row: string[]): string => `| ${row.join(' | ')} |`
  return [line(FIGURE_HEADER), line(FIGURE_HEADER.map(() => '---')), ...rows.map(line)].join('\n')
}

const file = process.argv[2]
if (isEntry(import.meta.url)) {
  if (file === undefined) throw new Error('usage: node --import tsx bench/table.ts bench/results/<date>.json')
  const report = JSON.parse(readFileSync(file, 'utf8')) as { figures: Figure[] }
  console.log(markdown(figureRows(report.figures)))
}
