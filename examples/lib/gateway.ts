// Runs an example gateway: listen on 127.0.0.1:$PORT [8080], print what to try, and on
// Ctrl-C (SIGINT) or SIGTERM close the app and the upstreams, then let the process exit.
import type { FastifyInstance } from 'fastify'
import type { Upstream } from './upstream.js'

export interface ServeOptions {
  /** The example's own upstream servers, closed after the gateway. */
  upstreams: Upstream[]
  /** Lines printed once the gateway listens. In these and in `tries`, `$GW` is its address. */
  banner: string[]
  /** Commands to try, each with a short comment, printed after the banner, aligned. */
  tries?: Array<[command: string, comment?: string]>
}

/** How long a clean shutdown may take before the process is told to exit anyway. */
const SHUTDOWN_GRACE_MS = 5000

export function gatewayPort (): number {
  const raw = process.env.PORT ?? '8080'
  const port = Number(raw)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`PORT: expected an integer from 0 to 65535, got "${raw}"`)
  }
  return port
}

export async function serve (app: FastifyInstance, { upstreams, banner, tries = [] }: ServeOptions): Promise<void> {
  try {
    await app.listen({ host: '127.0.0.1', port: gatewayPort() })
  } catch (err) {
    await closeAll(app, upstreams)
    throw err
  }
  const { port } = app.server.address() as { port: number }
  const gw = `http://127.0.0.1:${port}`
  const fill = (text: string): string => text.replaceAll('$GW', gw)
  const tried = aligned(tries.map(([command, comment]) => [fill(command), comment]))
  console.log(['', ...banner.map(fill), ...(tried.length > 0 ? ['', 'Try:', ...tried] : []), '', 'Ctrl-C stops it.', ''].join('\n'))
  onStop(async () => { await closeAll(app, upstreams) })
}

function aligned (tries: Array<[command: string, comment?: string]>): string[] {
  // A very long command keeps its comment close rather than pushing every comment right.
  const width = Math.max(0, ...tries.map(([command]) => command.length).filter((length) => length <= 80))
  return tries.map(([command, comment]) => `  ${comment === undefined ? command : `${command.padEnd(width)}   # ${comment}`}`)
}

async function closeAll (app: FastifyInstance, upstreams: Upstream[]): Promise<void> {
  await app.close()
  await Promise.all(upstreams.map(async (u) => { await u.close() }))
}

/** Runs `stop` on the first SIGINT/SIGTERM; a second one exits at once. */
export function onStop (stop: () => Promise<void>): void {
  let stopping = false
  const handle = (signal: NodeJS.Signals): void => {
    if (stopping) {
      console.error(`${signal} again: exiting now`)
      process.exit(130)
    }
    stopping = true
    console.error(`${signal}: closing the gateway and the upstreams`)
    stop().then(() => {
      process.off('SIGINT', handle)
      process.off('SIGTERM', handle)
      // Nothing should be left open now, so the process ends by itself. If something is,
      // say so (it would be a leak) and exit anyway.
      setTimeout(() => {
        console.error(`still running ${SHUTDOWN_GRACE_MS} ms after closing: something left a handle open; exiting`)
        process.exit(1)
      }, SHUTDOWN_GRACE_MS).unref()
    }, (err: unknown) => {
      console.error('shutdown failed:', err)
      process.exit(1)
    })
  }
  process.on('SIGINT', handle)
  process.on('SIGTERM', handle)
}
