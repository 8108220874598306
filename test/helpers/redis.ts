// A real redis-server on a free port of 127.0.0.1, with no persistence, that a test can stop,
// stall and start again on the same port. Tests skip when the machine has no redis-server.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { once } from 'node:events'

/** Why Redis tests cannot run here, or null when they can. */
export function redisMissing (): string | null {
  const found = spawnSync('redis-server', ['--version'], { stdio: 'ignore' })
  return found.error === undefined && found.status === 0 ? null : 'redis-server is not installed (apt-get install redis-server)'
}

export interface RedisServer {
  url: string
  port: number
  /** Kills the server (SIGKILL: as a crash, no goodbye to clients) and waits for it to exit. */
  stop: () => Promise<void>
  /** Starts it again on the same port (empty: nothing is saved) and waits until it answers PING. */
  start: () => Promise<void>
  /** SIGSTOP: the connections stay open and nothing answers. `resume` is SIGCONT. */
  stall: () => void
  resume: () => void
  close: () => Promise<void>
}

/**
 * A port for a redis-server child: found free, then released for the child to bind. Unlike a
 * dead target it cannot stay held (another process binds it); startRedis retries elsewhere if
 * the port was taken in between.
 */
async function releasedPort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export async function startRedis (): Promise<RedisServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRedisOn(await releasedPort())
    } catch (error) {
      if (attempt === 3) throw error
    }
  }
}

async function startRedisOn (port: number): Promise<RedisServer> {
  let child: ChildProcess | null = null
  let stalled = false
  const start = async (): Promise<void> => {
    const started = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    child = started
    await waitForPong(port, 5000)
  }
  const stop = async (): Promise<void> => {
    const running = child
    child = null
    if (running === null || running.exitCode !== null || running.signalCode !== null) return
    const exited = once(running, 'exit')
    if (stalled) resume()
    running.kill('SIGKILL')
    await exited
  }
  const resume = (): void => {
    stalled = false
    child?.kill('SIGCONT')
  }
  try {
    await start()
  } catch (error) {
    await stop()
    throw error
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    stall: () => {
      stalled = true
      child?.kill('SIGSTOP')
    },
    resume,
    close: stop
  }
}

async function waitForPong (port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await ping(port)) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${ms} ms`)
}

function ping (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let answer = ''
    const end = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => end(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => {
      answer += chunk.toString()
      if (answer.includes('\r\n')) end(answer.startsWith('+PONG'))
    })
    socket.on('error', () => end(false))
  })
}
