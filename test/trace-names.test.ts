// With @fastify/otel, every hook and handler becomes a span named after its function: the
// plugin's own are named for what they do, never after their source text.
import t from 'tap'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { registerInstrumentations } from '@opentelemetry/instrumentation'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import { startGateway, waitFor } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'

const exporter = new InMemorySpanExporter()
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
provider.register()
const fastifyOtel = new FastifyOtelInstrumentation()
registerInstrumentations({ tracerProvider: provider, instrumentations: [fastifyOtel] })
t.teardown(async () => { await provider.shutdown() })

t.test('the spans of the gateway\'s hooks and handlers are named after what they do', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }], errors: { expose: 'full' } }, {}, async (app) => {
    await app.register(fastifyOtel.plugin())
  })
  for (const path of ['/p/x', '/_upstream', '/metrics']) await (await gw.request(path)).body.dump()
  await waitFor(() => exporter.getFinishedSpans().some((s) => s.name.includes('prometheusMetrics')), 5000, 'the spans')
  const names = [...new Set(exporter.getFinishedSpans().map((s) => s.name))].sort()
  t.comment(names.join('\n'))
  for (const name of names) t.notMatch(name, /=>|\{|\(|anonymous/, `"${name}" reads as a name, not source text`)
  for (const expected of [
    'onRequest - returnRequestIdAndRefuseTwoHosts',
    'onSend - closeConnectionsWhileShuttingDown',
    'handler - proxyRequest',
    'handler - statusPage',
    'handler - prometheusMetrics'
  ]) t.ok(names.includes(expected), `a span "${expected}"`)
})
