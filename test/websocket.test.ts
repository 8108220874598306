import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway } from './helpers/gateway.js'

t.test('a websocket route proxies messages both ways with the forwarding headers', async (t) => {
  const server = http.createServer()
  const wss = new WebSocketServer({ server })
  let upgradeHeaders: http.IncomingHttpHeaders = {}
  wss.on('connection', (socket, req) => {
    upgradeHeaders = req.headers
    socket.on('message', (data) => socket.send(`echo ${String(data)} from ${req.url ?? ''}`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const client of wss.clients) client.terminate()
    wss.close()
    await new Promise((resolve) => server.close(resolve))
  })
  const target = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const gw = await startGateway(t, { pools: { live: { targets: [target] } }, routes: [{ prefix: '/live', pool: 'live', websocket: true }] })

  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/live/room/1?token=t`)
  t.teardown(() => ws.terminate())
  await once(ws, 'open')
  ws.send('hello')
  const [reply] = await once(ws, 'message') as [Buffer]
  t.equal(String(reply), 'echo hello from /room/1?token=t')
  t.equal(upgradeHeaders['x-forwarded-for'], '127.0.0.1')
  t.match(upgradeHeaders.via, /^1\.1 fastify-upstream-[\w-]{12}$/)
  t.match(upgradeHeaders['x-request-id'], /^req-/)
  ws.close()
  await once(ws, 'close')
})

t.test('plain HTTP on a websocket route is still proxied', async (t) => {
  const server = http.createServer((_req, res) => res.end('plain'))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
  const target = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const gw = await startGateway(t, { pools: { live: { targets: [target] } }, routes: [{ prefix: '/live', pool: 'live', websocket: true }] })
  const res = await gw.request('/live/x')
  t.equal(await res.body.text(), 'plain')
})
