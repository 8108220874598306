// What a mirror costs the client: the same open-loop traffic (a request every 4 ms, whatever the
// answers do, as real traffic arrives) to a plain route and to a route that mirrors every
// request to a shadow service that is both slow and failing: half its copies are reset, half
// answered after 500 ms. The client's p50 and p99 on each route, rounds alternating, and the
// ratio mirrored / plain per round.
//
// Run with `npm run bench:mirror`. Knobs (environment): BENCH_ROUNDS [3], BENCH_REQUESTS per
// round and route [2000], BENCH_INTERVAL_MS between requests [4]. Writes
// bench/results/mirror-<commit>-<date>.json.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import Fastify from 'fastify'
import { Agent, request } from 'undici'
import upstream from 'fastify-upstream'
import { HOST, commitOf, formatTable, median, percentile, positiveInteger, runMain, startWatchdog, writeResults } from './harness.js'

const ROUNDS = positiveInteger('BENCH_ROUNDS', 3)
const REQUESTS = positiveInteger('BENCH_REQUESTS', 2000)
const INTERVAL_MS = positiveInteger('BENCH_INTERVAL_MS', 4)

// The services live in a process of their own: only the gateway's work shares this one.
const SERVICES = `
  const http = require('node:http')
  let copies = 0
  const main = http.createServer((q, s) => s.end('ok'))
  const shadow = http.createServer((q, s) => {
    if (copies++ % 2 === 0) { q.socket.destroy(); return }
    setTimeout(() => s.end('late'), 500)
  })
  main.listen(0, '${HOST}', () => shadow.listen(0, '${HOST}', () => {
    console.log(JSON.stringify([main.address().port, shadow.address().port]))
  }))
`

interface Round { route: string, p50: number, p99: number }

await runMain(async () => {
  startWatchdog((ROUNDS * 2 + 2) * (REQUESTS * INTERVAL_MS + 30_000))
  const services = spawn(process.execPath, ['-e', SERVICES], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const [line] = await once(services.stdout, 'data') as [Buffer]
    const [mainPort, shadowPort] = JSON.parse(String(line)) as [number, number]
    const app = Fastify()
    await app.register(upstream, {
      pools: { main: { targets: [`http://${HOST}:${mainPort}`] }, shadow: { targets: [`http://${HOST}:${shadowPort}`] } },
      routes: [{ prefix: '/plain', pool: 'main' }, { prefix: '/mirrored', pool: 'main', mirror: { pool: 'shadow', maxInFlight: 1000 } }],
      status: false,
      metrics: false
    })
    await app.listen({ port: 0, host: HOST })
    const origin = `http://${HOST}:${(app.server.address() as { port: number }).port}`
    const agent = new Agent({ connections: 100 })
    const round = async (route: string): Promise<Round> => {
      const times: number[] = []
      const sent: Array<Promise<void>> = []
      const start = performance.now()
      for (let i = 0; i < REQUESTS; i++) {
        const wait = start + i * INTERVAL_MS - performance.now()
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
        sent.push((async () => {
          const from = performance.now()
          const res = await request(`${origin}${route}/x`, { dispatcher: agent })
          await res.body.dump()
          if (res.statusCode !== 200) throw new Error(`${route}: status ${res.statusCode}; a copy must never fail the client's request`)
          times.push(performance.now() - from)
        })())
      }
      await Promise.all(sent)
      times.sort((a, b) => a - b)
      return { route, p50: percentile(times, 0.5), p99: percentile(times, 0.99) }
    }
    await round('/plain')
    await round('/mirrored')
    const rounds: Round[] = []
    for (let i = 0; i < ROUNDS; i++) {
      // Alternate which route goes first, so a drift of the machine weighs on both alike.
      const order = i % 2 === 0 ? ['/plain', '/mirrored'] : ['/mirrored', '/plain']
      for (const route of order) rounds.push(await round(route))
    }
    await agent.close()
    await app.close()
    const of = (route: string): Round[] => rounds.filter((r) => r.route === route)
    const ratios = of('/mirrored').map((m, i) => ({ p50: m.p50 / of('/plain')[i]!.p50, p99: m.p99 / of('/plain')[i]!.p99 }))
    const ms = (v: number): string => `${v.toFixed(2)} ms`
    console.log(formatTable([
      ['route', 'p50 (median of rounds)', 'p99 (median of rounds)', 'p99 per round'],
      ...['/plain', '/mirrored'].map((route) => [route, ms(median(of(route).map((r) => r.p50))), ms(median(of(route).map((r) => r.p99))), of(route).map((r) => ms(r.p99)).join(', ')])
    ]))
    console.log(`mirrored / plain: p50 ${median(ratios.map((r) => r.p50)).toFixed(2)}×, p99 ${median(ratios.map((r) => r.p99)).toFixed(2)}× (median of ${ROUNDS} rounds)`)
    const commit = commitOf()
    const path = await writeResults(`mirror-${commit}-${new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z')}.json`, { commit, requests: REQUESTS, intervalMs: INTERVAL_MS, rounds, ratios })
    console.log(`results: ${path}`)
  } finally {
    services.kill()
  }
})
