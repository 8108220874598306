// What the benchmarks share: plain node:http upstreams, servers in child processes (started
// from the bench file itself, told apart by a role argument), the load generator's checks,
// medians, the table, the watchdog and the results file. Each bench file keeps only what it
// measures.
//
// Process layout, and why: autocannon runs in the parent; each server runs in a child process.
// In one process the load generator and the server under test would share one event loop and
// one core, so every variant would measure mostly autocannon.
import { execFileSync, fork, type ChildProcess, type ForkOptions } from 'node:child_process'
import { createServer, get, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdir, writeFile } from 'node:fs/promises'
import { readdirSync, readFileSync } from 'node:fs'
import { resolve as resolvePath } from 'node:path'
import { Pool } from 'undici'
import { fileURLToPath } from 'node:url'

export const HOST = '127.0.0.1'
/** How long a child may take to start listening, or to stop, before we give up on it. */
export const CHILD_START_MS = 30_000
export const CHILD_STOP_MS = 3_000
export const WARMUP_SECONDS = 1

/** What a child tells the parent once it listens. */
export interface Ready { ports: number[] }

// ---------------------------------------------------------------------------------------------
// Children: the servers.

/**
 * Plain node:http upstreams in one process; each names itself so balancing can be seen. A path
 * ending in `/bytes/<n>` is answered with n bytes (the JSON padded with spaces), any other with
 * the small JSON.
 */
export async function runUpstreams (names: string[]): Promise<Server[]> {
  const servers = names.map((name) => {
    const json = JSON.stringify({ ok: true, upstream: name })
    const small = Buffer.from(json)
    const padded = new Map<number, Buffer>()
    const bodyFor = (url: string): Buffer => {
      const bytes = /\/bytes\/(\d+)$/.exec(url)
      if (bytes === null) return small
      const length = Number(bytes[1])
      let body = padded.get(length)
      if (body === undefined) padded.set(length, body = Buffer.from(json.padEnd(length, ' ')))
      return body
    }
    const server = createServer((request, response) => {
      const body = bodyFor(request.url ?? '/')
      // Content-Length, not chunked: keeps the upstream's share of the work small and fixed.
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
      response.end(body)
    })
    // Longer than the proxies' idle keep-alive (undici's 4 s) so the proxy, not the upstream,
    // closes idle sockets: no request ever races a socket the upstream is closing.
    server.keepAliveTimeout = 10_000
    return server
  })
  await Promise.all(servers.map(async (server) => await new Promise<void>((resolve) => server.listen(0, HOST, resolve))))
  return servers
}

export function portOf (server: Server): number {
  return (server.address() as AddressInfo).port
}

export async function closeServers (servers: Server[]): Promise<void> {
  await Promise.all(servers.map(async (server) => await new Promise<void>((resolve) => {
    server.close(() => { resolve() })
    server.closeAllConnections()
  })))
}

/**
 * `count` distinct ports on HOST where nothing listens: listen on port 0, note the ports, close.
 * Another program could take one in between; a bench that relies on them checks what they answer.
 */
export async function closedPorts (count: number): Promise<number[]> {
  // All open at once, so the kernel cannot hand the same port out twice.
  const servers = Array.from({ length: count }, () => createServer())
  await Promise.all(servers.map(async (server) => await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, HOST, () => { resolve() })
  })))
  const ports = servers.map(portOf)
  await closeServers(servers)
  return ports
}

/**
 * The end of a child's start-up: stop on SIGTERM or when the parent goes away, then tell the
 * parent the ports it listens on.
 */
export function serveAsChild (ports: number[], close: () => Promise<void>): void {
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    // A graceful close, but bounded: a stuck socket must not keep the child (or the parent) alive.
    setTimeout(() => process.exit(0), CHILD_STOP_MS).unref()
    close().then(() => process.exit(0), () => process.exit(1))
  }
  process.on('SIGTERM', stop)
  // The IPC channel closes when the parent dies (even by SIGKILL): never outlive it.
  process.on('disconnect', stop)
  process.send?.({ ports } satisfies Ready)
}

/** What a metered child answers to `report`: its CPU time per response since the last `reset`. */
export interface CpuReport {
  cmd: 'report'
  /** The child process's CPU time (user + system, all threads) per response it finished, in µs. */
  cpuPerResponse: number
  responses: number
}

/** What a bench measures in a child besides CPU time: reset with the meter, reported with it. */
export interface ExtraMeter<T> {
  reset: () => void
  /** Given the responses finished since the reset. */
  report: (responses: number) => T
}

/**
 * In a child: counts the responses `server` finishes and answers the parent's `reset` and
 * `report` commands (see `ask`) with the CPU time per response, and whatever `extra` measures.
 * CPU time per response is the figure that does not depend on how much of the shared machine
 * the child happened to get.
 */
export function meterResponses<T extends object = object> (server: Server, extra?: ExtraMeter<T>): void {
  let responses = 0
  let cpuFrom = process.cpuUsage()
  server.on('request', (_request, response) => { response.once('finish', () => { responses++ }) })
  process.on('message', (message: { cmd: string }) => {
    if (message.cmd === 'reset') {
      responses = 0
      cpuFrom = process.cpuUsage()
      extra?.reset()
      process.send?.({ cmd: 'reset' })
    } else if (message.cmd === 'report') {
      const cpu = process.cpuUsage(cpuFrom)
      const report: CpuReport = { cmd: 'report', cpuPerResponse: (cpu.user + cpu.system) / Math.max(1, responses), responses }
      process.send?.({ ...extra?.report(responses), ...report })
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Parent: start the children, drive the load, report.

/** Sends a command to a child and waits for its answer to that command. */
export async function ask<T extends { cmd: string }> (child: ChildProcess, command: { cmd: string, [key: string]: unknown }): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => { done(); reject(new Error(`child: no answer to "${command.cmd}" within 5 s`)) }, 5_000)
    const onMessage = (message: T): void => {
      if (message.cmd !== command.cmd) return
      done()
      resolve(message)
    }
    const onExit = (code: number | null): void => { done(); reject(new Error(`child: exited with code ${code}`)) }
    const done = (): void => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
    child.send(command)
  })
}

export function positiveInteger (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}: expected a positive integer, got "${raw}"`)
  return value
}

const children: ChildProcess[] = []

/** How a child starts: another executable in front of node (valgrind), a longer start-up. */
export interface ChildOptions extends Pick<ForkOptions, 'execPath' | 'execArgv'> {
  /** How long it may take to listen [CHILD_START_MS]. */
  startMs?: number
}

/**
 * Starts `script` (a bench file's `import.meta.url`) again in a child process as `role` and
 * waits for the ports it listens on.
 */
export async function startChild (script: string, role: string, env: Record<string, string> = {}, options: ChildOptions = {}): Promise<{ child: ChildProcess, ports: number[] }> {
  const { startMs = CHILD_START_MS, ...forkOptions } = options
  // fork() reuses process.execArgv (`--import tsx`), so the child runs the TypeScript file too.
  const child = fork(fileURLToPath(script), [role], { env: { ...process.env, ...env }, stdio: 'inherit', ...forkOptions })
  children.push(child)
  const ports = await new Promise<number[]>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${role}: not listening after ${startMs} ms`)) }, startMs)
    child.once('message', (message: Ready) => { clearTimeout(timer); resolve(message.ports) })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${role}: exited early with code ${code}`)) })
  })
  return { child, ports }
}

/** Stops every child started so far (a scenario's, at its end; all of them, at the run's end). */
export async function stopChildren (): Promise<void> {
  await Promise.all(children.splice(0).map(async (child) => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve() }))
    child.kill('SIGTERM')
    // The child bounds its own close; SIGKILL is the backstop if it hangs anyway.
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_MS * 2)
    await exited
    clearTimeout(timer)
  }))
}

/**
 * Everything in a bench is bounded by autocannon's durations; this watchdog catches the rest
 * (a child that never answers, a hung close) so the run always ends.
 */
export function startWatchdog (budgetMs: number): void {
  setTimeout(() => {
    console.error(`bench: still running after ${Math.round(budgetMs / 1000)} s, giving up`)
    for (const child of children) child.kill('SIGKILL')
    process.exit(1)
  }, budgetMs).unref()
}

/** Runs a bench's main, reports a failure in one line, stops every child, sets the exit code. */
export async function runMain (main: () => Promise<void>): Promise<void> {
  let failed = false
  try {
    await main()
  } catch (error) {
    failed = true
    console.error('bench failed:', error instanceof Error ? error.message : error)
  } finally {
    await stopChildren()
  }
  process.exitCode = failed ? 1 : 0
}

/** One GET on a fresh connection (agent: false), for the sanity check before the load. */
export async function getBody (url: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: IncomingHttpHeaders, body: string }> {
  return await new Promise((resolve, reject) => {
    const request = get(url, { agent: false, timeout: 5_000, headers }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, headers: response.headers, body }) })
      response.on('error', reject)
    })
    request.on('timeout', () => { request.destroy(new Error(`GET ${url}: timed out`)) })
    request.on('error', reject)
  })
}

export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

export function formatTable (rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  // First column left-aligned (names), the numbers right-aligned.
  const line = (row: string[]): string => row.map((cell, column) => column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)).join('  ')
  return [line(rows[0]!), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.slice(1).map(line)].join('\n')
}

/** Writes `report` to bench/results/<name> and returns the path. */
export async function writeResults (name: string, report: unknown): Promise<string> {
  const resultsDir = fileURLToPath(new URL('./results/', import.meta.url))
  await mkdir(resultsDir, { recursive: true })
  const path = `${resultsDir}${name}`
  await writeFile(path, JSON.stringify(report, null, 2) + '\n')
  return path
}

// ---------------------------------------------------------------------------------------------
// What `bench/run.ts` shares with the scenario files: settings, spreads, ratios, CPU time.

/** How long and how often a scenario measures; `npm run bench -- --quick` shrinks them. */
export interface Settings {
  /** Repeats of every measurement; figures are the median and min–max across them. */
  rounds: number
  /** Seconds of load per timed measurement. */
  seconds: number
  quick: boolean
}

/** The median and the range of one figure across rounds. */
export interface Spread { median: number, min: number, max: number }

export function spread (values: number[]): Spread {
  if (values.length === 0) return { median: NaN, min: NaN, max: NaN }
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) }
}

/**
 * One figure of a scenario: its value in every round and, when it has one, its ratio to a
 * baseline measured in the same round (the machine is shared, so only same-round ratios compare).
 */
export interface Figure {
  scenario: string
  variant: string
  metric: string
  unit: string
  values: number[]
  value: Spread
  /** What the ratio divides by; null when the figure stands alone. */
  baseline: string | null
  ratios: number[] | null
  ratio: Spread | null
}

export function figure (scenario: string, variant: string, metric: string, unit: string, values: number[],
  baseline?: { name: string, values: number[] }): Figure {
  const ratios = baseline === undefined ? null : values.map((value, i) => value / baseline.values[i]!)
  return {
    scenario,
    variant,
    metric,
    unit,
    values,
    value: spread(values),
    baseline: baseline?.name ?? null,
    ratios,
    ratio: ratios === null ? null : spread(ratios)
  }
}

/** `1.23 (1.10–1.31)`: a spread as the table prints it. */
export function formatSpread (s: Spread, digits: number): string {
  const f = (n: number): string => Number.isFinite(n) ? n.toFixed(digits) : '-'
  return s.min === s.max ? f(s.median) : `${f(s.median)} (${f(s.min)}–${f(s.max)})`
}

/** True in the file node was started with, false where it is imported (by run.ts). */
export function isEntry (moduleUrl: string): boolean {
  return process.argv[1] !== undefined && resolvePath(process.argv[1]) === fileURLToPath(moduleUrl)
}

// Linux counts CPU time in clock ticks of 1/100 s (USER_HZ, the same on every architecture).
const MICROS_PER_TICK = 10_000

/** `pid` and its children (nginx's workers), from /proc: the processes whose CPU time counts. */
export function processTree (pid: number): number[] {
  const children = readdirSync('/proc').filter((name) => /^\d+$/.test(name)).filter((name) => {
    try {
      return statFields(Number(name))[1] === String(pid)
    } catch {
      return false // gone since readdir
    }
  }).map(Number)
  return [pid, ...children]
}

/** The fields of /proc/<pid>/stat after the command name (which may hold spaces): [state, ppid, …]. */
function statFields (pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/**
 * User + system CPU time of these processes so far, in µs, read from /proc/<pid>/stat (utime
 * and stime, fields 14 and 15): the same measure for a Node child, nginx and HAProxy.
 */
export function cpuMicros (pids: number[]): number {
  return pids.reduce((sum, pid) => {
    const fields = statFields(pid)
    return sum + (Number(fields[11]) + Number(fields[12])) * MICROS_PER_TICK
  }, 0)
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * The last line of a scenario file. Forked by startChild with a role, it runs that role; started
 * by hand, it says how to run the scenario (run.ts measures and prints every scenario alike).
 */
export async function scenarioEntry (moduleUrl: string, scenarios: string, runRole: (role: string) => Promise<void>): Promise<void> {
  if (!isEntry(moduleUrl)) return
  const role = process.argv[2]
  if (role !== undefined) {
    await runRole(role)
    return
  }
  console.error(`run with: npm run bench -- --only ${scenarios}`)
  process.exitCode = 1
}

/**
 * The commit the benchmarked code is at (short hash), `-dirty` when lib/ or bench/ differ from
 * it: a figure names the code it measured, and the results files are named after it.
 */
export function commitOf (): string {
  const git = (...args: string[]): string => execFileSync('git', args, { encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) }).trim()
  try {
    const commit = git('rev-parse', '--short=7', 'HEAD')
    return git('status', '--porcelain', '--', 'lib', 'bench/doors.ts', 'package-lock.json') === '' ? commit : `${commit}-dirty`
  } catch {
    return 'unknown'
  }
}

/** The shape of a load: how many connections at once, the answers' size, keep-alive or not. */
export interface LoadShape { connections: number, bytes: number, keepAlive: boolean }

/**
 * Closed-loop GETs of `path` on `port` for `seconds`, from undici in this process: each
 * connection sends its next request once the last answer has been read to its end. Every answer
 * must be a 200 of `shape.bytes` bytes. Latency is from sending to the answer's last byte.
 */
export async function closedLoop (port: number, path: string, shape: LoadShape, seconds: number): Promise<{ latencies: number[], responses: number, ms: number }> {
  const pool = new Pool(`http://${HOST}:${port}`, { connections: shape.connections, pipelining: 1 })
  const latencies: number[] = []
  const from = performance.now()
  const until = from + seconds * 1000
  const worker = async (): Promise<void> => {
    while (performance.now() < until) {
      const sent = performance.now()
      // reset: undici sends `Connection: close` and opens a new connection for the next request.
      const { statusCode, body } = await pool.request({ path, method: 'GET', reset: !shape.keepAlive })
      let length = 0
      for await (const chunk of body) length += (chunk as Buffer).length
      if (statusCode !== 200 || length !== shape.bytes) throw new Error(`GET ${path} on port ${port}: ${statusCode} with ${length} bytes, expected 200 with ${shape.bytes}`)
      latencies.push(performance.now() - sent)
    }
  }
  try {
    await Promise.all(Array.from({ length: shape.connections }, worker))
  } finally {
    await pool.close()
  }
  return { latencies, responses: latencies.length, ms: performance.now() - from }
}

/** The value below which a share `p` of the sorted values fall. */
export function percentile (sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!
}
