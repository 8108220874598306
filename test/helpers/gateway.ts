// A real gateway on 127.0.0.1 port 0, with its log records captured for assertions.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { Writable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { Agent, request as undiciRequest, type Dispatcher } from 'undici'
import upstream, { type UpstreamOptions } from '../../lib/index.js'

export interface LogRecord {
  level: number
  msg: string
  reqId?: string
  [key: string]: unknown
}

export interface Gateway {
  app: FastifyInstance
  url: string
  logs: LogRecord[]
  /** Sends a request to the gateway with a client of its own (closed with the gateway). */
  request: (path: string, options?: Partial<Omit<Dispatcher.RequestOptions, 'origin' | 'path'>>) => Promise<Dispatcher.ResponseData>
  /** Log records of failed requests (those with an `error` type). */
  failures: () => LogRecord[]
  close: () => Promise<void>
}

interface Teardown { teardown: (fn: () => unknown) => void }

export async function startGateway (
  t: Teardown,
  options: UpstreamOptions,
  fastifyOptions: FastifyServerOptions = {},
  /** Runs before the plugin is registered: hooks, other plugins, routes of the app. */
  setup?: (app: FastifyInstance) => void | Promise<void>
): Promise<Gateway> {
  const logs: LogRecord[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') logs.push(JSON.parse(line) as LogRecord)
      done()
    }
  })
  const app = Fastify({ logger: { level: 'info', stream }, ...fastifyOptions })
  await setup?.(app)
  await app.register(upstream, options)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const client = new Agent({ keepAliveTimeout: 1000 })
  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await client.close()
    await app.close()
  }
  t.teardown(close)
  return {
    app,
    url,
    logs,
    request: async (path, opts = {}) => await undiciRequest(url + path, { dispatcher: client, ...opts }),
    failures: () => logs.filter((r) => typeof r.error === 'string' && r.error !== 'client_aborted'),
    close
  }
}

/** Polls `check` until it is true or `ms` pass: for waiting on events, never a fixed sleep. */
export async function waitFor (check: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
