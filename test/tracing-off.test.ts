// Tracing when OpenTelemetry is not set up: @opentelemetry/api is installed (a devDependency
// here), but no tracer provider is registered, so `tracing: 'auto'` is off and the client's
// trace fields reach the upstream exactly as sent.
import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import upstream from '../lib/index.js'
import Fastify from 'fastify'

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

for (const tracing of [undefined, 'auto', true, false] as const) {
  t.test(`tracing: ${String(tracing)}, no tracer provider: the client's traceparent passes untouched`, async (t) => {
    const echo = await startUpstream('a')
    t.teardown(echo.close)
    const gw = await startGateway(t, { pools: { p: { targets: [echo.url] } }, routes: [{ prefix: '/p', pool: 'p' }], ...(tracing !== undefined ? { tracing } : {}) })
    const res = await gw.request('/p/x', { headers: { traceparent: TRACEPARENT, tracestate: 'vendor=1' } })
    const seen = await res.body.json() as { headers: Record<string, string> }
    t.equal(seen.headers.traceparent, TRACEPARENT)
    t.equal(seen.headers.tracestate, 'vendor=1')
  })
}

t.test('a bad tracing option fails at registration, naming it', async (t) => {
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  app.register(upstream, { pools: { p: { targets: ['http://127.0.0.1:1'] } }, routes: [{ prefix: '/p', pool: 'p' }], tracing: 'on' as never })
  await t.rejects(async () => await app.ready(),
    { name: 'OptionsError', path: 'tracing', message: /tracing: expected true, false or "auto", got "on"/ })
})
