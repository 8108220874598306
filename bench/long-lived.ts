// `npm run bench:long-lived`: how soon a Server-Sent Events client sees the response headers.
//
//   direct            client → upstream
//   http-proxy        client → bare @fastify/http-proxy → upstream
//   fastify-upstream  client → fastify-upstream → upstream
//
// The upstream sends its headers at once and its first event FIRST_EVENT_MS later, as an
// EventSource endpoint with nothing to say yet does. STREAMS clients at once, ROUNDS times; the
// table gives the median and worst time to headers, and to the first event, for each path. A
// proxy that holds the headers until the first body byte shows a time to headers close to
// FIRST_EVENT_MS. Each server runs in a child process of its own (see harness.ts).
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import {
  HOST, closeServers, formatTable, median, portOf, positiveInteger, runMain, serveAsChild, startChild,
  startWatchdog, writeResults
} from './harness.js'

const FIRST_EVENT_MS = positiveInteger('BENCH_FIRST_EVENT_MS', 1000)
const STREAMS = positiveInteger('BENCH_STREAMS', 50)
const ROUNDS = positiveInteger('BENCH_ROUNDS', 3)
const PREFIX = '/events'

type Role = 'upstream' | 'http-proxy' | 'fastify-upstream'

async function runChild (role: Role): Promise<void> {
  if (role === 'upstream') {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      res.flushHeaders()
      setTimeout(() => res.end('data: first\n\n'), FIRST_EVENT_MS)
    })
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
    serveAsChild([portOf(server)], async () => { await closeServers([server]) })
    return
  }
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  const target = `http://${HOST}:${process.env.BENCH_UPSTREAM_PORT ?? ''}`
  if (role === 'http-proxy') {
    const { default: httpProxy } = await import('@fastify/http-proxy')
    await app.register(httpProxy, { upstream: target, prefix: PREFIX })
  } else {
    const { default: upstream } = await import('fastify-upstream')
    await app.register(upstream, { pools: { events: { targets: [target] } }, routes: [{ prefix: PREFIX, pool: 'events' }] })
  }
  await app.listen({ port: 0, host: HOST })
  serveAsChild([portOf(app.server)], async () => { await app.close() })
}

interface Timing { headersMs: number, firstEventMs: number }

async function stream (url: string): Promise<Timing> {
  const started = performance.now()
  return await new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
      const headersMs = performance.now() - started
      res.once('data', () => {
        resolve({ headersMs, firstEventMs: performance.now() - started })
        res.destroy()
      })
    }).on('error', reject)
  })
}

async function main (): Promise<void> {
  startWatchdog(ROUNDS * 3 * (FIRST_EVENT_MS + 5000) + 60_000)
  const { ports: [upstreamPort] } = await startChild(import.meta.url, 'upstream')
  const env = { BENCH_UPSTREAM_PORT: String(upstreamPort) }
  const [proxy, gateway] = await Promise.all([startChild(import.meta.url, 'http-proxy', env), startChild(import.meta.url, 'fastify-upstream', env)])
  const urls: Record<string, string> = {
    direct: `http://${HOST}:${upstreamPort!}${PREFIX}/stream`,
    'http-proxy': `http://${HOST}:${proxy.ports[0]!}${PREFIX}/stream`,
    'fastify-upstream': `http://${HOST}:${gateway.ports[0]!}${PREFIX}/stream`
  }
  const timings: Record<string, Timing[]> = { direct: [], 'http-proxy': [], 'fastify-upstream': [] }
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, url] of Object.entries(urls)) {
      timings[name]!.push(...await Promise.all(Array.from({ length: STREAMS }, async () => await stream(url))))
    }
  }
  const rows = Object.entries(timings).map(([name, list]) => {
    const headers = list.map((t) => t.headersMs)
    const events = list.map((t) => t.firstEventMs)
    return { name, headersP50: median(headers), headersMax: Math.max(...headers), firstEventP50: median(events) }
  })
  console.log(`long-lived: ${STREAMS} SSE clients at once, ${ROUNDS} rounds; the first event comes ${FIRST_EVENT_MS} ms after the headers\n`)
  console.log(formatTable([
    ['path', 'headers p50 ms', 'headers max ms', 'first event p50 ms'],
    ...rows.map((r) => [r.name, r.headersP50.toFixed(1), r.headersMax.toFixed(1), r.firstEventP50.toFixed(1)])
  ]))
  const path = await writeResults('long-lived-latest.json', { firstEventMs: FIRST_EVENT_MS, streams: STREAMS, rounds: ROUNDS, rows })
  console.log(`\nresults: ${path}`)
}

const role = process.argv[2] as Role | undefined
if (role !== undefined) await runChild(role)
else await runMain(main)
