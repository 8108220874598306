// The Node front doors the success-path benchmarks compare (bench:overhead, bench:instructions,
// bench:load), defined once so every bench measures the same servers:
//
//   node-floor     node:http server + undici Pool.stream → upstream a: what relaying costs in
//                  Node with nothing else done, the lowest a Node proxy on undici can cost
//   fastify-floor  a Fastify wildcard route that hijacks the reply and relays as node-floor
//                  does: the floor of a Fastify plugin, the baseline every ratio divides by
//   http-proxy     bare @fastify/http-proxy → a
//   defaults       fastify-upstream, a round-robin pool of a and b, every option at its default
//                  (passive outlier detection, retries, metrics and the status page are on)
//   observe-off    defaults with `metrics: false, status: false`: what observing costs
//   everything     a pool of a, b and c with active health checks, outlier detection, retries
//                  on every condition (5xx too), limits, a total timeout, metrics, the status
//                  page, request ids and full error exposure
//
// The floors forward what a correct proxy must (method, path, the headers without hop-by-hop
// fields, the body) and nothing more: no forwarding headers, no timers, no error pages.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { Pool } from 'undici'
import { HOST, closeServers, portOf, runMain, runUpstreams, serveAsChild } from './harness.js'

export const PREFIX = '/svc'

export const DOORS = ['node-floor', 'fastify-floor', 'http-proxy', 'defaults', 'observe-off', 'everything'] as const
export type Door = typeof DOORS[number]
/** The baseline of every ratio: what any Fastify plugin must pay to relay. */
export const FLOOR: Door = 'fastify-floor'

/** How many of the upstreams a door spreads over (the sanity checks expect to see them all). */
export const UPSTREAMS_SEEN: Record<Door, number> = {
  'node-floor': 1, 'fastify-floor': 1, 'http-proxy': 1, defaults: 2, 'observe-off': 2, everything: 3
}

/** `BENCH_VARIANTS`, checked against the doors a bench knows. */
export function chosenDoors<T extends string> (known: readonly T[], fallback: readonly T[] = known): T[] {
  const raw = process.env.BENCH_VARIANTS
  const chosen = raw === undefined || raw === '' ? [...fallback] : raw.split(',') as T[]
  for (const name of chosen) if (!known.includes(name)) throw new Error(`BENCH_VARIANTS: unknown variant "${name}"; known: ${known.join(', ')}`)
  return chosen
}

// RFC 9110 §7.6.1's hop-by-hop fields, and `host` (undici sets the upstream's).
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host'])

function endToEnd (headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value !== undefined && !HOP_BY_HOP.has(name)) kept[name] = value
  }
  return kept
}

/** The floors' whole relay: one undici stream whose body undici writes into the client's response. */
function relay (pool: Pool, request: IncomingMessage, response: ServerResponse): void {
  const method = request.method ?? 'GET'
  pool.stream({
    path: request.url ?? '/',
    method,
    headers: endToEnd(request.headers),
    body: method === 'GET' || method === 'HEAD' ? null : request
  }, ({ statusCode, headers }) => {
    response.writeHead(statusCode, endToEnd(headers))
    return response
  }, (error) => {
    if (error === null) return
    if (response.headersSent) response.destroy()
    else response.writeHead(502).end()
  })
}

export interface StartedDoor { port: number, close: () => Promise<void> }

export interface DoorOptions {
  /**
   * Valgrind slows the proxy some fifty times, and on a busy machine a connection can take
   * seconds to be accepted: the default 2 s connect and health-check timers would fail
   * requests. Only the timers' lengths change; they still run as with the defaults.
   */
  underValgrind?: boolean
}

/** Starts `door` on HOST, port 0, in front of `upstreamPorts` (a, b, c). */
export async function startDoor (door: Door, upstreamPorts: number[], options: DoorOptions = {}): Promise<StartedDoor> {
  const origins = upstreamPorts.map((port) => `http://${HOST}:${port}`)
  if (door === 'node-floor') {
    const { createServer } = await import('node:http')
    const { Pool } = await import('undici')
    const pool = new Pool(origins[0]!)
    const server = createServer((request, response) => { relay(pool, request, response) })
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
    return {
      port: portOf(server),
      close: async () => {
        server.closeAllConnections()
        await new Promise<void>((resolve) => server.close(() => { resolve() }))
        await pool.close()
      }
    }
  }

  const { default: Fastify } = await import('fastify')
  // No logger by default: Fastify's child logger per request would be in every Fastify door's
  // figures alike. BENCH_LOG_LEVEL=warn shows why a door answered an error.
  const level = process.env.BENCH_LOG_LEVEL
  const app = Fastify({ logger: level === undefined || level === '' ? false : { level } })
  if (door === 'fastify-floor') {
    const { Pool } = await import('undici')
    const pool = new Pool(origins[0]!)
    app.all(`${PREFIX}/*`, (request, reply) => {
      reply.hijack()
      relay(pool, request.raw, reply.raw)
    })
    app.addHook('onClose', async () => { await pool.close() })
  } else if (door === 'http-proxy') {
    const { default: httpProxy } = await import('@fastify/http-proxy')
    await app.register(httpProxy, { upstream: origins[0]!, prefix: PREFIX })
  } else {
    const { default: upstream } = await import('fastify-upstream')
    const timeouts = options.underValgrind === true ? { connect: 60_000 } : {}
    if (door === 'everything') {
      await app.register(upstream, {
        pools: {
          svc: {
            targets: origins,
            // Every 5 s: on a clock, so a slower run (valgrind) counts more checks per response.
            // Under valgrind a check can take seconds: its 2 s timeout would eject every target.
            health: { path: '/health', interval: 5000, ...(options.underValgrind === true ? { timeout: 5000 } : {}) },
            outlier: { consecutiveFailures: 5 },
            retry: { retries: 2, on: ['connect-failure', 'refused-stream', 'reset', 'timeout', '5xx'] },
            limits: { maxConcurrent: 10_000, maxPending: 10_000 },
            timeouts: { total: 30_000, ...timeouts }
          }
        },
        routes: [{ prefix: PREFIX, pool: 'svc' }],
        errors: { expose: 'full' },
        metrics: { path: '/metrics' },
        status: { path: '/_upstream' },
        requestIdHeader: 'x-request-id'
      })
    } else {
      await app.register(upstream, {
        pools: { svc: { targets: origins.slice(0, 2), timeouts } },
        routes: [{ prefix: PREFIX, pool: 'svc' }],
        ...(door === 'observe-off' ? { metrics: false, status: false } : {})
      })
    }
  }
  await app.listen({ port: 0, host: HOST })
  return { port: portOf(app.server), close: async () => { await app.close() } }
}

/**
 * A door bench's child, by the role it was forked with (see startChild): the upstreams a, b and
 * c in one process, or one door in front of them (their ports in BENCH_UPSTREAM_PORTS).
 */
export async function runDoorChild (role: 'upstreams' | Door, options: DoorOptions = {}): Promise<void> {
  if (role === 'upstreams') {
    const servers = await runUpstreams(['a', 'b', 'c'])
    // Under valgrind the proxy's idle timers fire late: it may reuse a connection idle for more
    // than the upstreams' 10 s just as they close it (reply-from then answers 500, "other side
    // closed"). The upstreams never close an idle connection first there.
    if (options.underValgrind === true) for (const server of servers) server.keepAliveTimeout = 600_000
    serveAsChild(servers.map(portOf), async () => { await closeServers(servers) })
    return
  }
  const door = await startDoor(role, (process.env.BENCH_UPSTREAM_PORTS ?? '').split(',').map(Number), options)
  serveAsChild([door.port], door.close)
}

/** The last line of a door bench: forked with a role it runs that child, else the bench's main. */
export async function doorBenchEntry (main: () => Promise<void>, options: DoorOptions = {}): Promise<void> {
  const role = process.argv[2] as 'upstreams' | Door | undefined
  if (role !== undefined) await runDoorChild(role, options)
  else await runMain(main)
}
