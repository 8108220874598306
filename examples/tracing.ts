// OpenTelemetry tracing through the gateway: each try on a target is a span under the request's
// span, and the upstream gets exactly one `traceparent`, continuing the client's trace.
//
//   npm run build && node --import tsx examples/tracing.ts
//
// Spans are printed on stdout, one line each, as they end (a real setup exports them with
// OTLP instead). Pool "api" has a dead target and a live one, so half the requests show a
// failed try and its retry. The upstream answers with the trace fields it received.
import Fastify from 'fastify'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import { SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { registerInstrumentations } from '@opentelemetry/instrumentation'
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import upstream from 'fastify-upstream'
import { freePort, sendJson, startUpstream } from './lib/upstream.js'
import { serve } from './lib/gateway.js'

// 1. OpenTelemetry, before the app: a tracer provider (registered globally, with the
//    AsyncLocalStorage context manager and the W3C propagator), @fastify/otel for the server
//    side, the undici instrumentation for the requests to targets.
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(printer())] })
provider.register()
const fastifyOtel = new FastifyOtelInstrumentation()
registerInstrumentations({ instrumentations: [new UndiciInstrumentation(), fastifyOtel] })

const live = await startUpstream('api-live', {
  handler: (req, res) => {
    sendJson(res, 200, { instance: 'api-live', traceparent: req.headersDistinct.traceparent ?? [], tracestate: req.headersDistinct.tracestate ?? [] })
    return true
  }
})
const dead = `http://127.0.0.1:${await freePort()}`

// 2. The app: @fastify/otel first, then the gateway (tracing: 'auto' finds the provider).
const app = Fastify({ logger: { level: 'warn' } })
await app.register(fastifyOtel.plugin())
await app.register(upstream, {
  pools: { api: { targets: [dead, live.url], outlier: false } },
  routes: [{ prefix: '/api', pool: 'api' }]
})

await serve(app, {
  upstreams: [live],
  banner: [`fastify-upstream tracing example: pool "api" = ${dead} (nothing listens), ${live.url} (api-live)`],
  tries: [
    ["curl -s -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' $GW/api/hello", 'twice: one shows a refused try, then its retry'],
    ['curl -s $GW/api/hello', 'no traceparent from the client: a new trace']
  ]
})
await provider.forceFlush()

/** Prints each ended span: its name, trace and parent, and the gateway's attributes. */
function printer (): SpanExporter {
  return {
    export (spans: ReadableSpan[], done: (result: { code: 0 }) => void): void {
      for (const span of spans) {
        const ours = Object.entries(span.attributes).filter(([key]) => key.startsWith('fastify_upstream.') || key === 'http.response.status_code')
        const status = span.status.code === 2 ? ` ERROR "${span.status.message ?? ''}"` : ''
        console.log(`span ${span.name.padEnd(22)} trace ${span.spanContext().traceId} id ${span.spanContext().spanId} parent ${span.parentSpanContext?.spanId ?? '-'.padEnd(16)}${status} ${ours.map(([k, v]) => `${k}=${String(v)}`).join(' ')}`)
      }
      done({ code: 0 })
    },
    async shutdown (): Promise<void> {}
  }
}
