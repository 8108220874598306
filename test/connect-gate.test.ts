// The connect gate (lib/pool/connector.ts): while a target's last connection attempt failed
// outright, it gets one attempt at a time and the requests that need a connection meanwhile
// share that attempt's outcome. Real connects on loopback throughout: undici's own connector,
// wrapped in a counter to see how many connects the gate let through.
import t from 'tap'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { buildConnector } from 'undici'
import { ConnectGate } from '../lib/pool/connector.js'
import { startGateway } from './helpers/gateway.js'
import { startTcp, startBlackhole, startRefusing } from './helpers/servers.js'

type Connector = buildConnector.connector
interface Outcome { code: string | null, socket: net.Socket | null, at: number }

/** undici's connector for 127.0.0.1:port, counting the connects it is asked to make. */
function counted (port: number, timeout = 2000): { connect: Connector, calls: () => number, port: number } {
  const real = buildConnector({ timeout })
  let calls = 0
  return {
    connect: (options, callback) => { calls++; real(options, callback) },
    calls: () => calls,
    port
  }
}

/** Asks `connect` for `count` connections to `port` at once; resolves with every outcome. */
async function connectMany (connect: Connector, port: number, count: number): Promise<Outcome[]> {
  return await Promise.all(Array.from({ length: count }, async () => await new Promise<Outcome>((resolve) => {
    connect({ hostname: '127.0.0.1', host: `127.0.0.1:${port}`, protocol: 'http:', port: String(port) }, (error, socket) => {
      resolve({ code: error === null ? null : String((error as NodeJS.ErrnoException).code), socket, at: Date.now() })
    })
  })))
}

t.test('after a refusal, concurrent connects share one attempt, and all fail with its error', async (t) => {
  const refusing = await startRefusing()
  t.teardown(refusing.close)
  const port = refusing.port
  const gate = new ConnectGate()
  const base = counted(port)
  const connect = gate.wrap(base.connect)

  const [first] = await connectMany(connect, port, 1)
  t.equal(first!.code, 'ECONNREFUSED', 'the first connect is refused')
  t.equal(base.calls(), 1)

  const storm = await connectMany(connect, port, 20)
  t.same(new Set(storm.map((o) => o.code)), new Set(['ECONNREFUSED']), 'all 20 fail with the refusal')
  t.equal(base.calls(), 2, 'one real connect for the 20 of them')
})

t.test('when the target comes back, the attempt succeeds and every waiter opens its own connection', async (t) => {
  const refusing = await startRefusing()
  const port = refusing.port
  const gate = new ConnectGate()
  const base = counted(port)
  const connect = gate.wrap(base.connect)
  t.equal((await connectMany(connect, port, 1))[0]!.code, 'ECONNREFUSED')

  // The refusing socket lets go of the port only now, and a server takes it at once.
  await refusing.close()
  const server = net.createServer((socket) => { socket.on('error', () => {}) })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>((resolve) => server.close(() => resolve())))
  t.equal((server.address() as AddressInfo).port, port)

  const back = await connectMany(connect, port, 5)
  t.same(back.map((o) => o.code), [null, null, null, null, null], 'all five connect')
  t.equal(new Set(back.map((o) => o.socket)).size, 5, 'each with a socket of its own')
  t.equal(base.calls(), 1 + 5, 'the trial plus one connect per waiter')
  for (const o of back) o.socket!.destroy()

  // Healthy again: no gate, connects run side by side.
  const after = await connectMany(connect, port, 3)
  t.equal(base.calls(), 6 + 3)
  for (const o of after) o.socket!.destroy()
})

t.test('a timeout is not shared: after one, each waiter runs its own connect and its own timer', async (t) => {
  const hole = await startBlackhole()
  t.teardown(hole.close)
  const refusing = await startRefusing()
  t.teardown(refusing.close)
  const refused = refusing.port
  const gate = new ConnectGate()
  // The gate is per target and shared by its connectors: make it fail outright on one, then
  // watch the next attempt time out on another.
  t.equal((await connectMany(gate.wrap(counted(refused).connect), refused, 1))[0]!.code, 'ECONNREFUSED')

  const slow = counted(hole.port, 200)
  const started = Date.now()
  const outcomes = await connectMany(gate.wrap(slow.connect), hole.port, 3)
  t.same(outcomes.map((o) => o.code), ['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])
  t.equal(slow.calls(), 3, 'the trial, then one connect per waiter')
  const [trial, ...waiters] = outcomes.map((o) => o.at - started)
  for (const ms of waiters) t.ok(ms >= trial! + 150, `a waiter timed out ${ms} ms in, after its own 200 ms (the trial at ${trial} ms)`)

  // A timeout leaves the gate open: the next connects are not held behind one another.
  const next = await connectMany(gate.wrap(slow.connect), hole.port, 2)
  t.equal(slow.calls(), 5)
  t.ok(Math.abs(next[0]!.at - next[1]!.at) < 150, 'both time out together')
})

t.test('through the gateway: a target failing TLS outright sees one connection for a burst of requests', async (t) => {
  // A plain-text server behind an https:// target: every TLS handshake fails. It answers after
  // 100 ms, so the burst below all arrives while one attempt is under way.
  const plain = await startTcp((socket) => {
    const timer = setTimeout(() => socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n'), 100)
    socket.once('close', () => clearTimeout(timer))
  })
  t.teardown(plain.close)
  const gw = await startGateway(t, {
    pools: { p: { targets: [plain.url.replace('http:', 'https:')], outlier: false, retry: { retries: 0 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const ask = async (): Promise<{ status: number, error: string }> => {
    const res = await gw.request('/p/x', { headers: { accept: 'application/json' } })
    return { status: res.statusCode, error: (await res.body.json() as { error: string }).error }
  }
  const first = await ask()
  t.equal(first.status, 502)
  // The request's connection, and the look at what the port speaks that a TLS failure triggers
  // (pool/sniff.ts: a plain request, then a ClientHello; once per target every 10 s).
  const afterFirst = plain.hits
  t.ok(afterFirst >= 1 && afterFirst <= 3, `${afterFirst} connection(s): the request's, and the sniff's`)

  const burst = await Promise.all(Array.from({ length: 20 }, ask))
  t.same(new Set(burst.map((r) => `${r.status} ${r.error}`)), new Set([`502 ${first.error}`]), `all 20 answered 502 ${first.error}`)
  // Without the gate this is 20: each request would open a connection of its own.
  t.ok(plain.hits - afterFirst <= 3, `${plain.hits - afterFirst} TCP connection(s) for 20 requests`)
  t.equal(gw.failures().length, 21, 'one log record per failed request, as before')
})

t.test('through the gateway: a refused target that starts listening serves a burst in full', async (t) => {
  const refusing = await startRefusing()
  const port = refusing.port
  const gw = await startGateway(t, {
    pools: { p: { targets: [`http://127.0.0.1:${port}`], outlier: false, retry: { retries: 0 } } },
    routes: [{ prefix: '/p', pool: 'p' }]
  })
  const refused = await gw.request('/p/x', { headers: { accept: 'application/json' } })
  t.equal(refused.statusCode, 502)
  t.equal((await refused.body.json() as { error: string }).error, 'connection_refused')

  const http = await import('node:http')
  // The refusing socket lets go of the port only now, and a server takes it at once.
  await refusing.close()
  const server = http.createServer((_req, res) => { res.end('ok') })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise<void>((resolve) => server.close(() => resolve())) })

  const burst = await Promise.all(Array.from({ length: 10 }, async () => {
    const res = await gw.request('/p/x')
    return `${res.statusCode} ${await res.body.text()}`
  }))
  t.same(burst, Array(10).fill('200 ok'))
})
