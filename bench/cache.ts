// `npm run bench:cache`: what a cache hit costs against a proxied response, and what a cold key
// under load costs the upstream.
//
//   proxied  autocannon → fastify-upstream, a route without cache → upstream
//   hit      autocannon → fastify-upstream, a caching route whose answer is stored (no upstream)
//   cold key CONCURRENCY clients ask at once for a key nobody has asked for yet, whose upstream
//            answer takes COLD_ANSWER_MS: with `lock` (the default) one upstream request serves
//            them all; without, each goes upstream
//
// Figures: req/s and the gateway process's CPU time per response (from /proc, as bench:overhead
// measures it), the median of ROUNDS rounds; for the cold key, the upstream requests counted by
// the upstream itself. Each server runs in a child process of its own (see harness.ts).
import http from 'node:http'
import autocannon from 'autocannon'
import {
  HOST, WARMUP_SECONDS, closeServers, cpuMicros, formatTable, median, portOf, positiveInteger, runMain,
  serveAsChild, startChild, startWatchdog, writeResults, ask
} from './harness.js'

const ROUNDS = positiveInteger('BENCH_ROUNDS', 3)
const SECONDS = positiveInteger('BENCH_SECONDS', 5)
const CONNECTIONS = positiveInteger('BENCH_CONNECTIONS', 50)
const CONCURRENCY = positiveInteger('BENCH_COLD_CLIENTS', 200)
const COLD_ANSWER_MS = positiveInteger('BENCH_COLD_ANSWER_MS', 100)

type Role = 'upstream' | 'gateway'

async function runChild (role: Role): Promise<void> {
  if (role === 'upstream') {
    const body = JSON.stringify({ ok: true, items: Array.from({ length: 20 }, (_, i) => ({ id: i, name: `item ${i}` })) })
    let requests = 0
    const server = http.createServer((req, res) => {
      requests++
      const answer = (): void => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'max-age=3600' })
        res.end(body)
      }
      if (req.url?.startsWith('/cold') === true) setTimeout(answer, COLD_ANSWER_MS)
      else answer()
    })
    server.keepAliveTimeout = 10_000
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
    process.on('message', (message: { cmd: string }) => {
      if (message.cmd === 'count') process.send?.({ cmd: 'count', requests })
    })
    serveAsChild([portOf(server)], async () => { await closeServers([server]) })
    return
  }
  const { default: Fastify } = await import('fastify')
  const { default: upstream } = await import('fastify-upstream')
  const app = Fastify({ logger: false })
  const target = `http://${HOST}:${process.env.BENCH_UPSTREAM_PORT ?? ''}`
  await app.register(upstream, {
    pools: { api: { targets: [target] } },
    routes: [
      { prefix: '/proxied', pool: 'api' },
      { prefix: '/cached', pool: 'api', cache: true },
      { prefix: '/unlocked', pool: 'api', cache: { lock: false } }
    ],
    status: false,
    metrics: false
  })
  await app.listen({ port: 0, host: HOST })
  serveAsChild([portOf(app.server)], async () => { await app.close() })
}

interface Sample { rps: number, cpuPerResponse: number }

async function measure (url: string, pid: number): Promise<Sample> {
  await autocannon({ url, connections: CONNECTIONS, duration: WARMUP_SECONDS })
  const before = cpuMicros([pid])
  const result = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS })
  const cpu = cpuMicros([pid]) - before
  const problems = result.errors + result.timeouts + result.non2xx
  if (problems > 0) throw new Error(`cache bench: ${problems} failed responses on ${url}`)
  return { rps: result.requests.average, cpuPerResponse: cpu / Math.max(1, result['2xx']) }
}

async function coldKey (gateway: string, upstream: import('node:child_process').ChildProcess, path: string): Promise<number> {
  const before = (await ask<{ cmd: string, requests: number }>(upstream, { cmd: 'count' })).requests
  const answers = await Promise.all(Array.from({ length: CONCURRENCY }, async () => await new Promise<number>((resolve, reject) => {
    http.get(`${gateway}${path}`, { agent: false }, (res) => { res.resume(); res.on('end', () => { resolve(res.statusCode ?? 0) }) }).on('error', reject)
  })))
  if (answers.some((status) => status !== 200)) throw new Error(`cache bench: a cold-key answer was not 200 (${path})`)
  return (await ask<{ cmd: string, requests: number }>(upstream, { cmd: 'count' })).requests - before
}

async function main (): Promise<void> {
  startWatchdog(ROUNDS * (2 * (SECONDS + WARMUP_SECONDS) + 10) * 1000 + 60_000)
  const up = await startChild(import.meta.url, 'upstream')
  const gw = await startChild(import.meta.url, 'gateway', { BENCH_UPSTREAM_PORT: String(up.ports[0]) })
  const base = `http://${HOST}:${gw.ports[0]!}`
  const pid = gw.child.pid!
  const proxied: Sample[] = []
  const hits: Sample[] = []
  const locked: number[] = []
  const unlocked: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    proxied.push(await measure(`${base}/proxied/items`, pid))
    hits.push(await measure(`${base}/cached/items`, pid))
    locked.push(await coldKey(base, up.child, `/cached/cold/${round}`))
    unlocked.push(await coldKey(base, up.child, `/unlocked/cold/${round}`))
  }
  const cpuRatios = hits.map((hit, i) => hit.cpuPerResponse / proxied[i]!.cpuPerResponse)
  const rows = [
    ['proxied (no cache)', median(proxied.map((s) => s.rps)).toFixed(0), median(proxied.map((s) => s.cpuPerResponse)).toFixed(0), '1.00'],
    ['cache hit', median(hits.map((s) => s.rps)).toFixed(0), median(hits.map((s) => s.cpuPerResponse)).toFixed(0), `${median(cpuRatios).toFixed(2)} (${Math.min(...cpuRatios).toFixed(2)}–${Math.max(...cpuRatios).toFixed(2)})`]
  ]
  console.log(`cache: ${CONNECTIONS} connections, ${SECONDS} s per measurement, median of ${ROUNDS} rounds\n`)
  console.log(formatTable([['path', 'req/s', 'CPU µs/response', 'CPU vs proxied'], ...rows]))
  console.log(`\ncold key, ${CONCURRENCY} clients at once, upstream answer in ${COLD_ANSWER_MS} ms: upstream requests with lock ${locked.join(', ')}; with lock: false ${unlocked.join(', ')}`)
  const path = await writeResults('cache-latest.json', { rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, proxied, hits, cpuRatios, coldKey: { clients: CONCURRENCY, answerMs: COLD_ANSWER_MS, locked, unlocked } })
  console.log(`\nresults: ${path}`)
}

const role = process.argv[2] as Role | undefined
if (role !== undefined) await runChild(role)
else await runMain(main)
