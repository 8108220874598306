// nginx and HAProxy as the benchmarks' peers: find the binary, fill in bench/nginx.conf or
// bench/haproxy.cfg, start it in the foreground, wait until it listens, stop it. A scenario asks
// `externalPeers()` which are installed and skips the others with a message, so the bench runs
// on a machine that has neither.
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HOST, CHILD_START_MS, CHILD_STOP_MS, closedPorts, processTree, sleep } from './harness.js'

export type Peer = 'nginx' | 'haproxy'
export const PEERS: Peer[] = ['nginx', 'haproxy']

/** Round-robin, or the peer's nearest to least-request. */
export type PeerBalance = 'round-robin' | 'least-conn'

export interface PeerProcess {
  peer: Peer
  port: number
  /** The processes whose CPU time is the peer's: nginx's master and its worker; HAProxy's one process. */
  pids: number[]
  stop: () => Promise<void>
}

const SEARCH_PATH = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin']

/** The peer's executable, or null when it is not installed. */
export function peerBinary (peer: Peer): string | null {
  for (const dir of SEARCH_PATH) {
    if (dir === '') continue
    const path = join(dir, peer)
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch {}
  }
  return null
}

/** The installed peers; logs one line for each one skipped. */
export function externalPeers (): Peer[] {
  return PEERS.filter((peer) => {
    if (peerBinary(peer) !== null) return true
    console.log(`  ${peer}: not installed, skipped (apt-get install -y ${peer})`)
    return false
  })
}

function config (peer: Peer, values: { dir: string, port: number, prefix: string, servers: number[], balance: PeerBalance }): string {
  const template = readFileSync(fileURLToPath(new URL(peer === 'nginx' ? './nginx.conf' : './haproxy.cfg', import.meta.url)), 'utf8')
  const servers = values.servers.map((port, i) => peer === 'nginx'
    ? `    server ${HOST}:${port};`
    : `  server s${i} ${HOST}:${port}`).join('\n')
  const balance = peer === 'nginx'
    ? (values.balance === 'least-conn' ? 'least_conn;' : '# round-robin')
    : (values.balance === 'least-conn' ? 'leastconn' : 'roundrobin')
  const filled: Record<string, string> = { DIR: values.dir, PORT: String(values.port), PREFIX: values.prefix, SERVERS: servers, BALANCE: balance }
  return template.replace(/\{\{([A-Z]+)\}\}/g, (_, name: string) => filled[name] ?? '')
}

async function listening (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, HOST, () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })
}

/** Starts `peer` in front of `servers` (ports on HOST), proxying `prefix`/…; resolves once it listens. */
export async function startPeer (peer: Peer, options: { servers: number[], prefix: string, balance?: PeerBalance }): Promise<PeerProcess> {
  const binary = peerBinary(peer)
  if (binary === null) throw new Error(`${peer}: not installed`)
  const dir = mkdtempSync(join(tmpdir(), `bench-${peer}-`))
  const [port] = await closedPorts(1)
  const file = join(dir, peer === 'nginx' ? 'nginx.conf' : 'haproxy.cfg')
  writeFileSync(file, config(peer, { dir, port: port!, prefix: options.prefix, servers: options.servers, balance: options.balance ?? 'round-robin' }))
  // Both in the foreground (nginx: `daemon off` in its config; HAProxy: -db), so the child is the server.
  const args = peer === 'nginx' ? ['-p', dir, '-c', file, '-e', join(dir, 'error.log')] : ['-f', file, '-db', '-q']
  const child: ChildProcess = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve() }))
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      // nginx: SIGTERM is its fast shutdown; HAProxy: SIGTERM stops at once too.
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_MS)
      await exited
      clearTimeout(timer)
    }
    rmSync(dir, { recursive: true, force: true })
  }
  const started = performance.now()
  while (!await listening(port!)) {
    if (child.exitCode !== null || performance.now() - started > CHILD_START_MS) {
      await stop()
      throw new Error(`${peer}: not listening on ${port} (${stderr.trim() || `exit code ${child.exitCode}`})`)
    }
    await sleep(50)
  }
  // nginx forks its worker before it listens; HAProxy has none.
  return { peer, port: port!, pids: processTree(child.pid!), stop }
}
