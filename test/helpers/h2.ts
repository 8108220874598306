// HTTP/2 on both sides of the gateway: node:http2 upstreams (TLS or clear text) and an HTTP/2
// client of the gateway that reads trailers too.
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import type { Socket } from 'node:net'
import type { Running } from './servers.js'

export type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void

export interface H2Upstream extends Running {
  /** The request headers of every stream it got, in order. */
  seen: http2.IncomingHttpHeaders[]
}

export interface H2UpstreamOptions {
  /** TLS: an HTTP/2 server over TLS (ALPN h2), taking HTTP/1.1 too when `allowHTTP1`. */
  tls?: { key: string, cert: string }
  allowHTTP1?: boolean
  settings?: http2.Settings
  /** For HTTP/1.1 requests of a TLS server with allowHTTP1 (and its 'upgrade' events). */
  onServer?: (server: http2.Http2Server | http2.Http2SecureServer) => void
}

/** Answers a stream with JSON describing the request (method, path, headers, body bytes). */
export const echoStream: StreamHandler = (stream, headers) => {
  let bytes = 0
  stream.on('data', (chunk: Buffer) => { bytes += chunk.length })
  stream.on('end', () => {
    if (stream.destroyed) return
    stream.respond({ ':status': 200, 'content-type': 'application/json' })
    stream.end(JSON.stringify({ method: headers[':method'], path: headers[':path'], headers, bytes }))
  })
}

export async function startH2Upstream (handler: StreamHandler = echoStream, options: H2UpstreamOptions = {}): Promise<H2Upstream> {
  const server = options.tls !== undefined
    ? http2.createSecureServer({ ...options.tls, allowHTTP1: options.allowHTTP1 ?? false, settings: options.settings ?? {} })
    : http2.createServer({ settings: options.settings ?? {} })
  const sockets = new Set<Socket>()
  const sessions = new Set<http2.ServerHttp2Session>()
  const running: H2Upstream = {
    url: '',
    port: 0,
    hits: 0,
    connections: 0,
    seen: [],
    close: async () => {
      for (const session of sessions) session.destroy()
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  server.on('connection', (socket: Socket) => {
    running.connections++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.on('secureConnection', () => {})
  server.on('tlsClientError', () => {})
  server.on('session', (session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
    session.on('error', () => {})
  })
  server.on('stream', (stream, headers) => {
    running.hits++
    running.seen.push(headers)
    stream.on('error', () => {})
    handler(stream, headers)
  })
  options.onServer?.(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  running.port = (server.address() as AddressInfo).port
  running.url = `${options.tls !== undefined ? 'https' : 'http'}://127.0.0.1:${running.port}`
  return running
}

export interface H2Answer {
  status: number
  headers: http2.IncomingHttpHeaders
  body: string
  trailers: http2.IncomingHttpHeaders
  /** The stream's RST_STREAM code when it was reset, else 0. */
  rstCode: number
}

/** One request over an HTTP/2 session (the caller owns and closes the session). */
export async function h2Request (session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string | Buffer, trailers?: http2.OutgoingHttpHeaders): Promise<H2Answer> {
  return await new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined, waitForTrailers: trailers !== undefined })
    if (trailers !== undefined) stream.once('wantTrailers', () => { stream.sendTrailers(trailers) })
    let answer: Omit<H2Answer, 'body' | 'rstCode'> = { status: 0, headers: {}, trailers: {} }
    const chunks: Buffer[] = []
    stream.on('response', (h) => { answer = { ...answer, status: Number(h[':status']), headers: h } })
    stream.on('trailers', (t) => { answer.trailers = t })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('close', () => { resolve({ ...answer, body: Buffer.concat(chunks).toString(), rstCode: stream.rstCode ?? 0 }) })
    stream.on('error', () => {})
    session.once('error', reject)
    if (body !== undefined) stream.end(body)
  })
}
