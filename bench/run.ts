// `npm run bench`: every scenario, one table, one results file (bench/results/<date>.json).
//
//   npm run bench                          all scenarios, 3 rounds, 5 s per measurement
//   npm run bench -- --quick               1 round, 2 s per measurement: checks that it all runs
//   npm run bench -- --only kill,slow      some scenarios (names below)
//   npm run bench -- --rounds 5 --seconds 8
//
// Every figure is measured in each round and reported as the median and min–max across rounds,
// and, where it has one, as a ratio to a baseline measured in the same round: the machine is
// shared and noisy, so absolute figures from different runs do not compare, same-round ratios
// do. The soak test is separate (`npm run bench:soak`, bench/soak.ts): it runs for minutes.
import os from 'node:os'
import { execFileSync } from 'node:child_process'
import {
  commitOf, formatTable, runMain, startWatchdog, stopChildren, writeResults, type Figure, type Settings
} from './harness.js'
import { PEERS, peerBinary } from './external.js'
import { overhead } from './overhead.js'
import { kill, slow, budget } from './resilience.js'
import { storm } from './failure-storm.js'
import { timeouts } from './timeouts.js'
import { FIGURE_HEADER, figureRows } from './table.js'

type Scenario = (settings: Settings) => Promise<{ figures: Figure[], detail: unknown }>

const SCENARIOS: Record<string, { run: Scenario, about: string }> = {
  overhead: { run: overhead, about: 'success-path cost against the floors: direct, node-floor, fastify-floor, http-proxy, fastify-upstream (defaults, observe-off, everything), nginx, HAProxy' },
  kill: { run: kill, about: 'one of three targets SIGKILLed under load: client errors, time to ejection' },
  slow: { run: slow, about: 'one of three targets 200 ms slow: p50/p99 per balancer' },
  storm: { run: storm, about: 'every target refuses: req/s against the success path, event-loop delay, log lines per failure' },
  timeouts: { run: timeouts, about: 'timeouts.headers 500 ms against a hanging upstream: time to 504' },
  budget: { run: budget, about: 'every target answers 503, retries on 5xx: upstream requests per client request' }
}

function parseArgs (argv: string[]): { settings: Settings, only: string[] } {
  const quick = argv.includes('--quick')
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag)
    return i === -1 ? undefined : argv[i + 1]
  }
  const count = (flag: string, fallback: number): number => {
    const raw = value(flag)
    if (raw === undefined) return fallback
    const n = Number(raw)
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag}: expected a positive integer, got "${raw}"`)
    return n
  }
  const only = (value('--only') ?? Object.keys(SCENARIOS).join(',')).split(',').filter((name) => name !== '')
  const unknown = only.filter((name) => SCENARIOS[name] === undefined)
  if (unknown.length > 0) throw new Error(`--only: unknown scenario(s) ${unknown.join(', ')}; known: ${Object.keys(SCENARIOS).join(', ')}`)
  return { settings: { quick, rounds: count('--rounds', quick ? 1 : 3), seconds: count('--seconds', quick ? 2 : 5) }, only }
}

function peerVersions (): Record<string, string> {
  return Object.fromEntries(PEERS.map((peer) => {
    const binary = peerBinary(peer)
    if (binary === null) return [peer, 'not installed']
    try {
      // nginx prints its version on stderr, HAProxy on stdout: merge them.
      return [peer, execFileSync('sh', ['-c', '"$0" -v 2>&1', binary], { encoding: 'utf8' }).split('\n')[0]!.trim()]
    } catch (error) {
      return [peer, `unknown (${error instanceof Error ? error.message : String(error)})`]
    }
  }))
}

async function main (): Promise<void> {
  const { settings, only } = parseArgs(process.argv.slice(2))
  startWatchdog(30 * 60_000)
  const started = new Date()
  const commit = commitOf()
  const loadavgAtStart = os.loadavg()
  console.log(`bench at ${commit}: ${only.join(', ')}; ${settings.rounds} round(s), ${settings.seconds} s per measurement${settings.quick ? ' (quick)' : ''}; ` +
    `node ${process.version}, ${os.cpus().length} CPU(s) ${os.cpus()[0]?.model ?? ''}, load average ${os.loadavg().map((n) => n.toFixed(2)).join(' ')}`)

  const figures: Figure[] = []
  const details: Record<string, unknown> = {}
  const failures: Record<string, string> = {}
  for (const name of only) {
    const scenario = SCENARIOS[name]!
    const from = performance.now()
    console.log(`\n${name}: ${scenario.about}`)
    try {
      const result = await scenario.run(settings)
      figures.push(...result.figures)
      details[name] = result.detail
    } catch (error) {
      // One broken scenario does not cost the others' figures; the run still fails at the end.
      failures[name] = error instanceof Error ? error.message : String(error)
      console.error(`  ${name} failed: ${failures[name]}`)
    } finally {
      await stopChildren()
    }
    console.log(`  (${name}: ${Math.round((performance.now() - from) / 1000)} s)`)
  }

  console.log(`\nMedian (min–max) of ${settings.rounds} round(s); ratios are to the baseline measured in the same round.\n`)
  console.log(formatTable([FIGURE_HEADER, ...figureRows(figures)]))

  const report = {
    date: started.toISOString(),
    commit,
    durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
    machine: { node: process.version, platform: `${os.platform()} ${os.release()} ${os.arch()}`, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? null, loadavgAtStart, loadavgAtEnd: os.loadavg(), peers: peerVersions() },
    settings: { ...settings, scenarios: only },
    figures,
    failures,
    details
  }
  // Named after the commit it measured, so a figure quoted elsewhere can name its file.
  const file = `${started.toISOString().slice(0, 19).replace(/:/g, '-')}Z-at-${commit}${settings.quick ? '-quick' : ''}.json`
  console.log(`\nwrote ${await writeResults(file, report)}`)
  if (Object.keys(failures).length > 0) throw new Error(`failed: ${Object.entries(failures).map(([name, message]) => `${name} (${message})`).join('; ')}`)
}

await runMain(main)
