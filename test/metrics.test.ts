// Prometheus metrics on a real gateway, read back by parsing prom-client's own output.
import t from 'tap'
import { Registry } from 'prom-client'
import { startGateway } from './helpers/gateway.js'
import { startUpstream, deadTarget } from './helpers/servers.js'

interface Sample { name: string, labels: Record<string, string>, value: number }

/** Prometheus text format, the lines prom-client writes: `name{a="b",...} value`. */
function parse (text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`unparseable line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, k, v] of m[2]?.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g) ?? []) labels[k!] = v!
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return samples
}

function value (samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
}

t.test('requests, failures, retries, latency and target state are counted with bounded labels', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const dead = await deadTarget(t)
  const gw = await startGateway(t, {
    pools: { api: { targets: [u.url] }, gone: { targets: [dead] } },
    routes: [{ prefix: '/api', pool: 'api' }, { prefix: '/gone', pool: 'gone' }]
  })
  for (let i = 0; i < 3; i++) await (await gw.request(`/api/item/${i}?q=${i}`)).body.text()
  t.equal((await gw.request('/gone/x')).statusCode, 502)

  const res = await gw.request('/metrics')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /text\/plain; version=0\.0\.4/)
  const text = await res.body.text()
  t.notMatch(text, /item/, 'no URL in any label')
  const samples = parse(text)
  const target = u.url.replace('http://', '')
  const deadHost = dead.replace('http://', '')
  t.equal(value(samples, 'fastify_upstream_requests_total', { pool: 'api', target, status_class: '2xx' }), 3)
  t.equal(value(samples, 'fastify_upstream_requests_total', { pool: 'gone', target: deadHost, status_class: '5xx' }), 1)
  t.equal(value(samples, 'fastify_upstream_failures_total', { pool: 'gone', target: deadHost, error: 'connection_refused', blame: 'upstream' }), 1)
  t.equal(value(samples, 'fastify_upstream_failures_total', { pool: 'api' }), undefined, 'no failure for the healthy pool')
  t.equal(value(samples, 'fastify_upstream_request_duration_seconds_count', { pool: 'api', target }), 3)
  t.equal(value(samples, 'fastify_upstream_headers_duration_seconds_count', { pool: 'api', target }), 3)
  t.equal(value(samples, 'fastify_upstream_request_duration_seconds_bucket', { pool: 'api', target, le: '+Inf' }), 3)
  t.equal(value(samples, 'fastify_upstream_in_flight', { pool: 'api', target }), 0)
  t.equal(value(samples, 'fastify_upstream_queue_depth', { pool: 'api' }), 0)
  t.equal(value(samples, 'fastify_upstream_target_up', { pool: 'api', target, state: 'healthy' }), 1)
  t.equal(value(samples, 'fastify_upstream_ejections_total', { pool: 'api', target }), 0)
  t.equal(value(samples, 'fastify_upstream_ejections_total', { pool: 'gone', target: deadHost }), 0, 'one failure is not an ejection')
  const labels = new Set(samples.filter((s) => s.name.startsWith('fastify_upstream_')).flatMap((s) => Object.keys(s.labels)))
  t.same([...labels].sort(), ['blame', 'error', 'le', 'pool', 'state', 'status_class', 'target'])
})

t.test('a retried request counts its retries', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const dead = await deadTarget(t)
  const gw = await startGateway(t, { pools: { api: { targets: [dead, u.url], balancer: 'round-robin' } }, routes: [{ prefix: '/api', pool: 'api' }] })
  // Round robin over [dead, u]: the 1st and 3rd requests meet the refusal and are retried on u.
  for (let i = 0; i < 4; i++) {
    const res = await gw.request('/api/x')
    t.equal(res.statusCode, 200)
    await res.body.text()
  }
  const samples = parse(await (await gw.request('/metrics')).body.text())
  t.equal(value(samples, 'fastify_upstream_retries_total', { pool: 'api' }), 2, 'two retries: one for each request that met the dead target')
})

t.test("the app's registry gets the metrics; metrics: false serves nothing", async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const registry = new Registry()
  const gw = await startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }], metrics: { path: '/m', registry } })
  await (await gw.request('/api/x')).body.text()
  t.match(await registry.metrics(), /fastify_upstream_requests_total\{pool="api"/)
  t.equal((await gw.request('/m')).statusCode, 200)

  const off = await startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }], metrics: false })
  t.equal((await off.request('/metrics')).statusCode, 404)
})

t.test('a registry that is not one fails at registration with its path', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  await t.rejects(startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }], metrics: { registry: {} as Registry } }), /metrics\.registry/)
  await t.rejects(startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }], status: { keep: -1 } }), /status\.keep/)
  await t.rejects(startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }], status: { diagnosis: { outlier: 1 } } }), /status\.diagnosis\.outlier/)
  await t.rejects(startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }], status: { diagnosis: { bogus: 1 } as never } }), /status\.diagnosis/)
})

t.test('an ejection counts in fastify_upstream_ejections_total, which only grows', async (t) => {
  const dead = await deadTarget(t)
  const gw = await startGateway(t, { pools: { gone: { targets: [dead], outlier: { consecutiveFailures: 1, ejectFor: 60000 } } }, routes: [{ prefix: '/gone', pool: 'gone' }] })
  await (await gw.request('/gone/x')).body.dump()
  const scrape = async (): Promise<number | undefined> => value(parse(await (await gw.request('/metrics')).body.text()), 'fastify_upstream_ejections_total', { pool: 'gone', target: dead.replace('http://', '') })
  t.equal(await scrape(), 1)
  t.equal(await scrape(), 1, 'a second scrape reads the same total')
})

t.test('a client that leaves before its answer counts in client_aborts_total, not in requests_total', async (t) => {
  const u = await startUpstream('u', (_req, res) => { setTimeout(() => { if (!res.destroyed) res.end('late') }, 300) })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { api: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'api' }] })
  const controller = new AbortController()
  const pending = gw.request('/api/slow', { signal: controller.signal })
  setTimeout(() => { controller.abort() }, 50)
  await t.rejects(pending)
  let samples: Sample[] = []
  for (let i = 0; i < 50; i++) {
    samples = parse(await (await gw.request('/metrics')).body.text())
    if (value(samples, 'fastify_upstream_client_aborts_total', { pool: 'api' }) !== undefined) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(value(samples, 'fastify_upstream_client_aborts_total', { pool: 'api', target: `127.0.0.1:${new URL(u.url).port}` }), 1)
  t.equal(value(samples, 'fastify_upstream_requests_total', { pool: 'api' }), undefined, 'the abort is not an answered request')
})
