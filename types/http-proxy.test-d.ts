// Type tests for httpProxy: a typical @fastify/http-proxy registration compiles as it is with
// the import changed; options httpProxy refuses at registration are refused by the compiler too.
import Fastify from 'fastify'
import { httpProxy, type HttpProxyOptions } from 'fastify-upstream'

const app = Fastify()

await app.register(httpProxy, {
  upstream: 'http://127.0.0.1:3001',
  prefix: '/api',
  rewritePrefix: '/v1',
  http2: false,
  websocket: true,
  wsUpstream: 'ws://127.0.0.1:3001',
  httpMethods: ['GET', 'POST'],
  config: { tenant: 'acme' },
  constraints: { version: '1.0.0' },
  preHandler: async (request, reply) => {
    if (request.headers.authorization === undefined) await reply.code(401).send()
  },
  preValidation: (_request, _reply, done) => { done() },
  replyOptions: {
    rewriteRequestHeaders: (request, headers) => ({ ...headers, 'x-request-id': String(request.id) }),
    rewriteHeaders: (headers, request) => ({ ...headers, 'x-served-for': request.ip }),
    retriesCount: 1,
    timeout: 5000
  },
  undici: { connections: 64, keepAliveTimeout: 10000, headersTimeout: 5000, connect: { rejectUnauthorized: true } },
  internalRewriteLocationHeader: false,
  retryMethods: ['GET', 'HEAD'],
  disableRequestLogging: true
})

const options: HttpProxyOptions = { upstream: 'https://api.example.com' }
await app.register(httpProxy, options)

// @ts-expect-error handler is refused: the gateway's handler is the proxy
await app.register(httpProxy, { upstream: 'http://127.0.0.1:3001', handler: () => {} })
// @ts-expect-error replyOptions.onError is refused: the gateway answers failures (errors option)
await app.register(httpProxy, { upstream: 'http://127.0.0.1:3001', replyOptions: { onError: () => {} } })
// @ts-expect-error HTTP/2 to the upstream is not available through httpProxy
await app.register(httpProxy, { upstream: 'http://127.0.0.1:3001', http2: true })
// @ts-expect-error upstream is a URL string
await app.register(httpProxy, { upstream: new URL('http://127.0.0.1:3001') })

// The README's "Coming from @fastify/http-proxy" example, kept compiling.
{
  const app = Fastify({ logger: true })
  app.register(httpProxy, {
    upstream: 'http://127.0.0.1:3001',
    prefix: '/api',
    rewritePrefix: '/v1',
    preHandler: async (request, reply) => {
      if (request.headers.authorization === undefined) return reply.code(401).send()
    },
    replyOptions: { rewriteRequestHeaders: (request, headers) => ({ ...headers, 'x-client-ip': request.ip }) }
  })
  app.register(httpProxy, { upstream: 'http://127.0.0.1:3002', prefix: '/chat', websocket: true })
  await app.listen({ port: 8080 })
}
