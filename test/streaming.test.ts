import t from 'tap'
import { Readable } from 'node:stream'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'

const MB = 1024 * 1024
const SIZE = 10 * MB
const CHUNK = Buffer.alloc(64 * 1024, 'x')

/**
 * A lazily generated body of `size` bytes: nothing is held in memory up front, and a chunk is
 * made only when the consumer asks for one. `onPull` counts what has been pulled so far.
 */
function generated (size: number, onPull: (bytes: number) => void = () => {}): Readable {
  let sent = 0
  return new Readable({
    read () {
      if (sent >= size) return this.push(null)
      const chunk = CHUNK.subarray(0, Math.min(CHUNK.length, size - sent))
      sent += chunk.length
      onPull(chunk.length)
      this.push(chunk)
    }
  })
}

/** Resolves once `read()` has stopped changing for `quietMs`: the pipeline is full and stalled. */
async function settled (read: () => number, quietMs = 150, maxMs = 5000): Promise<number> {
  const deadline = Date.now() + maxMs
  let last = -1
  let since = Date.now()
  while (Date.now() < deadline) {
    const now = read()
    if (now !== last) {
      last = now
      since = Date.now()
    } else if (Date.now() - since >= quietMs) {
      return now
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return read()
}

// "Flat memory" is shown by backpressure: while the receiving side does not read, the sender
// must stall after a few socket buffers. A proxy that buffered bodies would swallow them whole.
// STALL is large enough that the kernel's loopback buffers on both hops cannot hide it.
const STALL = 64 * MB

t.test('a 10 MB upload streams through whole; a stalled upstream stops the client sending', async (t) => {
  let received = 0
  let reading = true
  let resume: (() => void) | undefined
  const u = await startUpstream('sink', (req, res) => {
    if (!reading) {
      req.pause()
      resume = () => req.resume()
    }
    req.on('data', (chunk: Buffer) => { received += chunk.length })
    req.on('end', () => res.end(String(received)))
  })
  t.teardown(u.close)
  // Uploads of any size: the route lifts the body limit (by default Fastify's 1 MiB).
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p', bodyLimit: false }] })

  const res = await gw.request('/p/upload', { method: 'POST', body: generated(SIZE), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(await res.body.text(), String(SIZE), 'every byte of 10 MB arrived upstream')

  reading = false
  received = 0
  let produced = 0
  const body = generated(STALL, (bytes) => { produced += bytes })
  const pending = gw.request('/p/upload', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
  const stalledAt = await settled(() => produced)
  t.ok(stalledAt < STALL / 2, `the client stalled after ${(stalledAt / MB).toFixed(1)} MB of ${STALL / MB} MB`)
  resume!()
  t.equal(await (await pending).body.text(), String(STALL), 'once the upstream reads again, all of it arrives')
})

t.test('a 10 MB download streams through whole; a stalled client stops the upstream sending', async (t) => {
  let produced = 0
  const u = await startUpstream('source', (req, res) => {
    const size = req.url === '/stall' ? STALL : SIZE
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) })
    generated(size, (bytes) => { produced += bytes }).pipe(res)
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })

  const res = await gw.request('/p/download')
  t.equal(res.headers['content-length'], String(SIZE), 'Content-Length passes through')
  let received = 0
  for await (const chunk of res.body) received += (chunk as Buffer).length
  t.equal(received, SIZE)

  produced = 0
  const stalled = await gw.request('/p/stall')
  const stalledAt = await settled(() => produced)
  t.ok(stalledAt < STALL / 2, `the upstream stalled after ${(stalledAt / MB).toFixed(1)} MB of ${STALL / MB} MB`)
  let total = 0
  for await (const chunk of stalled.body) total += (chunk as Buffer).length
  t.equal(total, STALL, 'once the client reads again, all of it arrives')
})

t.test('a chunked response without Content-Length is re-framed and arrives whole', async (t) => {
  const u = await startUpstream('chunks', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    let n = 0
    const timer = setInterval(() => {
      res.write(`part ${n}\n`)
      if (++n === 5) {
        clearInterval(timer)
        res.end()
      }
    }, 5)
  })
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/p', pool: 'p' }] })
  const res = await gw.request('/p/stream')
  t.equal(res.headers['transfer-encoding'], 'chunked')
  t.equal(await res.body.text(), 'part 0\npart 1\npart 2\npart 3\npart 4\n')
})
