// Raw HTTP/1.1 on both sides of the gateway, for exact bytes: an upstream that answers each
// request with scripted bytes, a client that writes requests as they are and reads answers with
// a strict parser of its own (status line, fields, and the framing RFC 9112 gives them).
import net from 'node:net'
import { once } from 'node:events'
import { startTcp, type Running } from './servers.js'

/** What a scripted upstream got: each request's head (and whatever body bytes came with it). */
export interface Scripted extends Running {
  heads: string[]
}

/**
 * An upstream that answers every request it reads with `answer(socket, head, index)`: write
 * exact bytes, split, late, cut. A request is taken to end at its head (bodies come with it).
 */
export async function startScripted (t: { teardown: (fn: () => unknown) => void }, answer: (socket: net.Socket, head: string, index: number) => void): Promise<Scripted> {
  const heads: string[] = []
  const running = await startTcp((socket) => {
    socket.on('error', () => {})
    let buffered = ''
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1')
      let end = buffered.indexOf('\r\n\r\n')
      while (end >= 0) {
        const head = buffered.slice(0, end + 4)
        buffered = buffered.slice(end + 4)
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        const body = buffered.slice(0, length)
        buffered = buffered.slice(body.length)
        heads.push(head + body)
        answer(socket, head + body, heads.length - 1)
        end = buffered.indexOf('\r\n\r\n')
      }
    })
  })
  t.teardown(running.close)
  return Object.assign(running, { heads })
}

export interface Response {
  status: number
  /** Field names in lower case; repeated fields joined with ', '. */
  headers: Record<string, string>
  body: string
  trailers: Record<string, string>
  /** How the body was framed: 'length', 'chunked', 'close' (until the connection closed) or 'none'. */
  framing: 'length' | 'chunked' | 'close' | 'none'
}

/**
 * Parses the answers on one connection strictly: every message must be well formed and framed;
 * interim (1xx) answers come back as responses of their own. `methods` are the requests' methods
 * in order (a HEAD answer has no body). Throws on anything malformed or cut inside a message.
 */
export function parseResponses (bytes: string, methods: string[], closed: boolean): Response[] {
  const out: Response[] = []
  let rest = bytes
  let request = 0
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n')
    if (end < 0) throw new Error(`a cut or malformed head: ${JSON.stringify(rest.slice(0, 200))}`)
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n')
    const match = /^HTTP\/1\.[01] (\d{3}) [^\r\n]*$/.exec(statusLine!)
    if (match === null) throw new Error(`not a status line: ${JSON.stringify(statusLine)}`)
    const status = Number(match[1])
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const field = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/.exec(line)
      if (field === null) throw new Error(`not a header field: ${JSON.stringify(line)}`)
      const name = field[1]!.toLowerCase()
      headers[name] = headers[name] === undefined ? field[2]! : `${headers[name]}, ${field[2]!}`
    }
    rest = rest.slice(end + 4)
    const response: Response = { status, headers, body: '', trailers: {}, framing: 'none' }
    out.push(response)
    if (status < 200) continue
    const method = methods[request++] ?? 'GET'
    if (method === 'HEAD' || status === 204 || status === 304) continue
    if (headers['transfer-encoding'] !== undefined) {
      if (headers['content-length'] !== undefined) throw new Error('both Content-Length and Transfer-Encoding')
      if (headers['transfer-encoding'].toLowerCase() !== 'chunked') throw new Error(`transfer coding ${headers['transfer-encoding']}`)
      response.framing = 'chunked'
      for (;;) {
        const lineEnd = rest.indexOf('\r\n')
        if (lineEnd < 0) throw new Error('a chunked body cut short')
        const size = parseInt(rest.slice(0, lineEnd), 16)
        if (!/^[0-9a-fA-F]+$/.test(rest.slice(0, lineEnd).split(';')[0]!)) throw new Error(`bad chunk size ${JSON.stringify(rest.slice(0, lineEnd))}`)
        rest = rest.slice(lineEnd + 2)
        if (size === 0) break
        if (rest.length < size + 2 || rest.slice(size, size + 2) !== '\r\n') throw new Error('a chunk cut short')
        response.body += rest.slice(0, size)
        rest = rest.slice(size + 2)
      }
      // Trailer fields, then the empty line.
      for (;;) {
        const lineEnd = rest.indexOf('\r\n')
        if (lineEnd < 0) throw new Error('a trailer section cut short')
        const line = rest.slice(0, lineEnd)
        rest = rest.slice(lineEnd + 2)
        if (line === '') break
        const field = /^([^:\s]+):[ \t]*(.*?)[ \t]*$/.exec(line)
        if (field === null) throw new Error(`not a trailer field: ${JSON.stringify(line)}`)
        response.trailers[field[1]!.toLowerCase()] = field[2]!
      }
    } else if (headers['content-length'] !== undefined) {
      if (!/^\d+$/.test(headers['content-length'])) throw new Error(`bad Content-Length ${headers['content-length']}`)
      const length = Number(headers['content-length'])
      if (rest.length < length) throw new Error(`a body cut short: ${rest.length} of ${length} bytes`)
      response.framing = 'length'
      response.body = rest.slice(0, length)
      rest = rest.slice(length)
    } else {
      if (!closed) throw new Error('a body framed by the connection\'s end, and the connection is open')
      response.framing = 'close'
      response.body = rest
      rest = ''
    }
  }
  return out
}

/** Writes `requests` on one connection at once (pipelined), reads until `done` says so or the gateway closes. */
export async function exchangeRaw (url: string, requests: string[], done: (bytes: string) => boolean, ms = 10_000): Promise<{ bytes: string, closed: boolean }> {
  const socket = net.connect(Number(new URL(url).port), '127.0.0.1')
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.write(requests.join(''), 'latin1')
  let bytes = ''
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms)
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.toString('latin1')
      if (done(bytes)) {
        clearTimeout(timer)
        resolve(false)
      }
    })
    socket.once('close', () => { clearTimeout(timer); resolve(true) })
  })
  socket.destroy()
  return { bytes, closed }
}

/** True once `bytes` hold `count` complete final answers (strictly parsed). */
export function hasAnswers (count: number, methods: string[] = []): (bytes: string) => boolean {
  return (bytes) => {
    try {
      return parseResponses(bytes, methods, false).filter((r) => r.status >= 200).length >= count
    } catch {
      return false
    }
  }
}
