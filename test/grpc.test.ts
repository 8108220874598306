import t from 'tap'
import http2 from 'node:http2'
import * as grpc from '@grpc/grpc-js'
import type { FastifyServerOptions } from 'fastify'
import type { AddressInfo } from 'node:net'
import { startGateway, waitFor, type Gateway } from './helpers/gateway.js'
import { deadTarget } from './helpers/servers.js'
import { startH2Upstream } from './helpers/h2.js'
import type { UpstreamOptions } from '../lib/index.js'

// A service without .proto files: messages are UTF-8 strings, (de)serialised by hand.
const text = { serialize: (s: string) => Buffer.from(s), deserialize: (b: Buffer) => b.toString() }
const method = (name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<string, string> => ({
  path: `/test.Echo/${name}`,
  requestStream,
  responseStream,
  requestSerialize: text.serialize,
  requestDeserialize: text.deserialize,
  responseSerialize: text.serialize,
  responseDeserialize: text.deserialize
})
const service = {
  unary: method('Unary', false, false),
  serverStream: method('ServerStream', false, true),
  clientStream: method('ClientStream', true, false),
  bidi: method('Bidi', true, true)
}
const EchoClient = grpc.makeGenericClientConstructor(service, 'Echo')
type Client = InstanceType<typeof EchoClient> & Record<string, (...args: unknown[]) => unknown>

interface ServerOptions {
  /** Messages a server stream sends before it is cut (the server's connections destroyed). */
  cutAfter?: number
}

interface GrpcServer { url: string, server: grpc.Server, close: () => Promise<void> }

async function startGrpcServer (options: ServerOptions = {}): Promise<GrpcServer> {
  const server = new grpc.Server()
  server.addService(service, {
    unary: (call: grpc.ServerUnaryCall<string, string>, callback: grpc.sendUnaryData<string>) => {
      const trailing = new grpc.Metadata()
      trailing.set('x-trailing', 'bye')
      const sent = new grpc.Metadata()
      const deadline = call.getDeadline()
      const at = deadline instanceof Date ? deadline.getTime() : Number(deadline)
      sent.set('x-seen-deadline', Number.isFinite(at) ? String(at - Date.now()) : 'none')
      call.sendMetadata(sent)
      if (call.request === 'fail') {
        callback({ code: grpc.status.NOT_FOUND, details: 'no such thing' })
        return
      }
      const delay = call.request.startsWith('slow') ? 400 : 0
      setTimeout(() => { callback(null, `echo:${call.request}:${String(call.metadata.get('x-custom')[0] ?? '')}`, trailing) }, delay)
    },
    serverStream: (call: grpc.ServerWritableStream<string, string>) => {
      const count = Number(call.request)
      for (let i = 0; i < count; i++) call.write(`m${i}`)
      if (options.cutAfter !== undefined) {
        // The target dies mid-stream: its process would take its connections with it.
        setTimeout(() => { server.forceShutdown() }, 50)
        return
      }
      call.end()
    },
    clientStream: (call: grpc.ServerReadableStream<string, string>, callback: grpc.sendUnaryData<string>) => {
      const got: string[] = []
      call.on('data', (m: string) => got.push(m))
      call.on('end', () => { callback(null, got.join('+')) })
    },
    bidi: (call: grpc.ServerDuplexStream<string, string>) => {
      call.on('data', (m: string) => call.write(m.toUpperCase()))
      call.on('end', () => call.end())
    }
  })
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => { if (err !== null) reject(err); else resolve(p) })
  })
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: async () => { server.forceShutdown() }
  }
}

async function gateway (t: { teardown: (fn: () => unknown) => void }, targets: string[], pool: Partial<UpstreamOptions['pools'][string]> = {}): Promise<{ gw: Gateway, client: Client, address: string }> {
  const gw = await startGateway(t, {
    pools: { rpc: { targets, protocol: 'h2c', ...pool } },
    routes: [{ prefix: '/test.Echo', pool: 'rpc', grpc: true }]
  }, { http2: true } as unknown as FastifyServerOptions)
  const address = `127.0.0.1:${(gw.app.server.address() as AddressInfo).port}`
  const client = new EchoClient(address, grpc.credentials.createInsecure()) as Client
  t.teardown(() => client.close())
  return { gw, client, address }
}

async function unary (client: Client, request: string, metadata = new grpc.Metadata(), options: grpc.CallOptions = {}): Promise<{ err: grpc.ServiceError | null, reply?: string, headers?: grpc.Metadata, trailers?: grpc.Metadata }> {
  return await new Promise((resolve) => {
    let headers: grpc.Metadata | undefined
    let trailers: grpc.Metadata | undefined
    const call = client.unary(request, metadata, options, (err: grpc.ServiceError | null, reply?: string) => {
      setImmediate(() => { resolve({ err, reply, headers, trailers }) })
    }) as grpc.ClientUnaryCall
    call.on('metadata', (m: grpc.Metadata) => { headers = m })
    call.on('status', (s: grpc.StatusObject) => { trailers = s.metadata })
  })
}

t.test('unary calls through the gateway, with custom and trailing metadata', async (t) => {
  const up = await startGrpcServer()
  t.teardown(up.close)
  const { client } = await gateway(t, [up.url])
  const metadata = new grpc.Metadata()
  metadata.set('x-custom', 'hello')
  const { err, reply, headers, trailers } = await unary(client, 'ping', metadata)
  t.equal(err, null)
  t.equal(reply, 'echo:ping:hello', 'the message and the custom metadata reached the service')
  t.equal(headers?.get('x-seen-deadline')[0], 'none', 'no deadline given, none invented')
  t.equal(trailers?.get('x-trailing')[0], 'bye', 'trailing metadata came back')
  const failed = await unary(client, 'fail')
  t.equal(failed.err?.code, grpc.status.NOT_FOUND, 'the service\'s own status passes through')
  t.equal(failed.err?.details, 'no such thing')
})

t.test('server streaming, client streaming and bidirectional calls', async (t) => {
  const up = await startGrpcServer()
  t.teardown(up.close)
  const { client } = await gateway(t, [up.url])
  const streamed = await new Promise<string[]>((resolve, reject) => {
    const got: string[] = []
    const call = client.serverStream('3') as grpc.ClientReadableStream<string>
    call.on('data', (m: string) => got.push(m))
    call.on('end', () => resolve(got))
    call.on('error', reject)
  })
  t.same(streamed, ['m0', 'm1', 'm2'])
  const gathered = await new Promise<string>((resolve, reject) => {
    const call = client.clientStream((err: grpc.ServiceError | null, reply: string) => { if (err !== null) reject(err); else resolve(reply) }) as grpc.ClientWritableStream<string>
    for (const m of ['a', 'b', 'c']) call.write(m)
    call.end()
  })
  t.equal(gathered, 'a+b+c')
  const echoed = await new Promise<string[]>((resolve, reject) => {
    const got: string[] = []
    const call = client.bidi() as grpc.ClientDuplexStream<string, string>
    call.on('data', (m: string) => {
      got.push(m)
      if (got.length < 3) call.write(`x${got.length}`)
      else call.end()
    })
    call.on('end', () => resolve(got))
    call.on('error', reject)
    call.write('x0')
  })
  t.same(echoed, ['X0', 'X1', 'X2'], 'each answer came before the next message was sent')
})

t.test('the call\'s deadline: the target hears what is left; the gateway answers DEADLINE_EXCEEDED when it passes', async (t) => {
  const up = await startGrpcServer()
  t.teardown(up.close)
  const { client } = await gateway(t, [up.url])
  const { headers } = await unary(client, 'ping', new grpc.Metadata(), { deadline: Date.now() + 5000 })
  const seen = Number(headers?.get('x-seen-deadline')[0])
  t.ok(seen > 0 && seen <= 5000, `the target got a deadline no later than the client's (${seen} ms left)`)
  // A target that never answers, and a raw HTTP/2 client that keeps no timer of its own: the
  // gateway's is the one that fires.
  const silent = await startH2Upstream(() => {})
  t.teardown(silent.close)
  const { gw, address } = await gateway(t, [silent.url])
  const session = http2.connect(`http://${address}`)
  t.teardown(() => session.close())
  const answer = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
    const stream = session.request({ ':method': 'POST', ':path': '/test.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '100m' })
    stream.on('response', resolve)
    stream.on('error', () => {})
    const message = Buffer.from('slow')
    const frame = Buffer.alloc(5 + message.length)
    frame.writeUInt32BE(message.length, 1)
    message.copy(frame, 5)
    stream.end(frame)
  })
  t.equal(answer[':status'], 200)
  t.equal(answer['content-type'], 'application/grpc')
  t.equal(answer['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED))
  t.match(decodeURIComponent(String(answer['grpc-message'])), /deadline/)
  t.ok(answer['proxy-status'] !== undefined, 'Proxy-Status as for any failure')
  t.ok(answer['x-request-id'] !== undefined, 'the request id as for any failure')
  t.equal(gw.failures().length, 1, 'one log record')
})

t.test('a dead target: UNAVAILABLE in the gateway\'s words, never a page', async (t) => {
  const dead = await deadTarget(t)
  const { client, gw } = await gateway(t, [dead])
  const { err } = await unary(client, 'ping')
  t.equal(err?.code, grpc.status.UNAVAILABLE)
  t.match(err?.details, /Service refused the connection/)
  t.match(err?.details, /Nothing is listening on/, 'the hint under full exposure')
  t.comment(`grpc-js printed: ${err?.message ?? ''}`)
  t.match(err?.metadata.get('proxy-status')[0], /connection_refused/)
  t.equal(gw.failures().length, 1)
  t.equal(gw.failures()[0]!.error, 'connection_refused')
})

t.test('every target out of rotation: UNAVAILABLE at once', async (t) => {
  const dead = await deadTarget(t)
  const { client } = await gateway(t, [dead], { outlier: { consecutiveFailures: 1 } })
  await unary(client, 'ping')
  const { err } = await unary(client, 'ping')
  t.equal(err?.code, grpc.status.UNAVAILABLE)
  t.match(err?.metadata.get('proxy-status')[0], /destination_unavailable|connection_refused/)
})

t.test('limits reached: RESOURCE_EXHAUSTED', async (t) => {
  const up = await startGrpcServer()
  t.teardown(up.close)
  const { client } = await gateway(t, [up.url], { limits: { maxConcurrent: 1, maxPending: 0 } })
  const slow = unary(client, 'slow one')
  // The first call holds the target's one slot: wait until it is in flight.
  await new Promise((resolve) => setTimeout(resolve, 100))
  const { err } = await unary(client, 'ping')
  t.equal(err?.code, grpc.status.RESOURCE_EXHAUSTED)
  t.equal((await slow).err, null)
})

t.test('a target killed mid-stream: the messages sent, then UNAVAILABLE in the trailers', async (t) => {
  const up = await startGrpcServer({ cutAfter: 2 })
  const { client, gw } = await gateway(t, [up.url])
  const { got, err } = await new Promise<{ got: string[], err: grpc.ServiceError | null }>((resolve) => {
    const got: string[] = []
    const call = client.serverStream('2') as grpc.ClientReadableStream<string>
    call.on('data', (m: string) => got.push(m))
    call.on('error', (err: grpc.ServiceError) => resolve({ got, err }))
    call.on('end', () => resolve({ got, err: null }))
  })
  t.same(got, ['m0', 'm1'], 'what flowed reached the client')
  t.equal(err?.code, grpc.status.UNAVAILABLE)
  t.match(err?.details, /lost while its answer was being sent|Service/)
  t.equal(gw.failures().length, 1, 'one log record')
})

t.test('a gRPC call to an http1 pool: UNIMPLEMENTED, naming the option', async (t) => {
  const up = await startGrpcServer()
  t.teardown(up.close)
  const gw = await startGateway(t, { pools: { rpc: { targets: [up.url] } }, routes: [{ prefix: '/test.Echo', pool: 'rpc' }] }, { http2: true } as unknown as FastifyServerOptions)
  const client = new EchoClient(`127.0.0.1:${(gw.app.server.address() as AddressInfo).port}`, grpc.credentials.createInsecure()) as Client
  t.teardown(() => client.close())
  const { err } = await unary(client, 'ping')
  t.equal(err?.code, grpc.status.UNIMPLEMENTED)
  t.match(err?.details, /set protocol: 'h2c'/)
})

t.test('health.grpc: grpc.health.v1.Health/Check; SERVING is healthy, anything else is not, with the status in the reason', async (t) => {
  let serving = 1
  let asked = ''
  const server = new grpc.Server()
  const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b }
  server.addService({
    check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize }
  }, {
    check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      // HealthCheckRequest { service = 1 }: tag, length, name.
      asked = call.request.subarray(2).toString()
      callback(null, Buffer.from([0x08, serving]))
    }
  })
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => { if (err !== null) reject(err); else resolve(p) })
  })
  t.teardown(() => server.forceShutdown())
  const gw = await startGateway(t, {
    pools: { rpc: { targets: [`http://127.0.0.1:${port}`], protocol: 'h2c', health: { grpc: { service: 'test.Echo' }, interval: 50, healthyAfter: 1, unhealthyAfter: 1 } } },
    routes: [{ prefix: '/test.Echo', pool: 'rpc', grpc: true }]
  })
  const target = (): ReturnType<Gateway['app']['upstream']['pool']>['targets'] extends () => Array<infer T> ? T : never => gw.app.upstream.pool('rpc').targets()[0]!
  await waitFor(() => target().health === 'healthy', 5000, 'a SERVING answer')
  t.equal(asked, 'test.Echo', 'the check names the service')
  serving = 2
  await waitFor(() => target().health === 'unhealthy', 5000, 'a NOT_SERVING answer')
  t.match(target().why, /NOT_SERVING, expected SERVING/)
})
