// Tiny upstream services for the examples: a node:http server on 127.0.0.1, port 0, that
// answers with JSON saying which instance answered, unless a handler says otherwise.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface Upstream {
  /** e.g. `users-a`: shows in every answer, so round-robin is visible. */
  readonly name: string
  /** `http://127.0.0.1:<port>`: what a pool's `targets` lists. */
  readonly url: string
  close: () => Promise<void>
}

/** Return `true` when the request was handled; otherwise the default JSON answer is sent. */
export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, name: string) => boolean

export interface UpstreamOptions {
  handler?: UpstreamHandler
  /** One line on stderr per request, with the request id the gateway sent. [false] */
  log?: boolean
}

export async function startUpstream (name: string, options: UpstreamOptions = {}): Promise<Upstream> {
  const server = createServer((req, res) => {
    if (options.log === true) {
      process.stderr.write(`[upstream ${name}] ${req.method ?? '?'} ${req.url ?? '/'} x-request-id=${String(req.headers['x-request-id'] ?? '-')}\n`)
    }
    if (options.handler?.(req, res, name) === true) return
    sendJson(res, 200, {
      instance: name,
      method: req.method,
      path: req.url,
      requestId: req.headers['x-request-id'] ?? null,
      forwardedFor: req.headers['x-forwarded-for'] ?? null
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  const { port } = server.address() as AddressInfo
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      // The gateway's keep-alive sockets (and a deliberately slow answer) must not hold us up.
      const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
      server.closeAllConnections()
      await closed
    }
  }
}

export function sendJson (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n'
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

/** A port on 127.0.0.1 where nothing listens (now): listen on port 0, note the port, close. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  return port
}
