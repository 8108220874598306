// What a target really speaks, asked when a connection failed in a way a protocol mismatch
// explains (a TLS handshake refused, a connection closed or answered with something that is
// not HTTP/1.1): the operator is told what to change, not "closed the connection".
//
// Two short looks on fresh connections, each bounded by SNIFF_MS: an HTTP/1.1 request in clear
// text (an HTTP/1.x status line, a TLS alert record, an HTTP/2 SETTINGS frame all give
// themselves away in their first bytes), then, when that says nothing, a TLS ClientHello
// (accepted: the port speaks TLS, and ALPN tells whether HTTP/2).
import net from 'node:net'
import tls from 'node:tls'
import type { UpstreamProtocol } from '../options/types.js'

const SNIFF_MS = 1000
/** A finding is kept this long per target: a misconfiguration lasts, a sniff per failure would not help. */
const KEEP_MS = 10_000

export type Speaks = 'http1' | 'tls' | 'tls-h2' | 'h2' | null

/** Reads a first answer's bytes: an HTTP/1.x status line, a TLS record, an HTTP/2 frame header. */
export function speaksFrom (bytes: Buffer): Speaks {
  if (bytes.length >= 7 && bytes.subarray(0, 7).toString('latin1') === 'HTTP/1.') return 'http1'
  // A TLS record: content type (alert 21, handshake 22), then version 3.x.
  if (bytes.length >= 2 && (bytes[0] === 21 || bytes[0] === 22) && bytes[1] === 3) return 'tls'
  // An HTTP/2 frame header: 24-bit length, type 4 (SETTINGS), flags, stream 0; a server's
  // preface opens with one.
  if (bytes.length >= 9 && bytes[3] === 4 && bytes.readUInt32BE(5) === 0) return 'h2'
  return null
}

async function clearText (host: string, port: number): Promise<Speaks> {
  return await new Promise((resolve) => {
    const socket = net.connect({ host, port })
    let seen = Buffer.alloc(0)
    const done = (speaks: Speaks): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(speaks)
    }
    const timer = setTimeout(() => { done(speaksFrom(seen)) }, SNIFF_MS)
    socket.on('connect', () => { socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`) })
    socket.on('data', (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk])
      if (seen.length >= 9) done(speaksFrom(seen))
    })
    socket.on('error', () => { done(speaksFrom(seen)) })
    socket.on('close', () => { done(speaksFrom(seen)) })
  })
}

async function overTls (host: string, port: number): Promise<Speaks> {
  return await new Promise((resolve) => {
    // Only the handshake is of interest: whose certificate it is does not matter here.
    const socket = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'], ...(net.isIP(host) === 0 ? { servername: host } : {}) })
    const done = (speaks: Speaks): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(speaks)
    }
    const timer = setTimeout(() => { done(null) }, SNIFF_MS)
    socket.on('secureConnect', () => { done(socket.alpnProtocol === 'h2' ? 'tls-h2' : 'tls') })
    socket.on('error', () => { done(null) })
  })
}

/** What the port at host:port speaks, as far as two short looks tell. */
export async function sniff (host: string, port: number): Promise<Speaks> {
  const plain = await clearText(host, port)
  if (plain !== null) return plain
  return await overTls(host, port)
}

/** One target's findings, kept KEEP_MS. */
export class Sniffer {
  #found: { at: number, speaks: Promise<Speaks> } | null = null

  constructor (private readonly host: string, private readonly port: number) {}

  speaks (): Promise<Speaks> {
    const now = Date.now()
    if (this.#found === null || now - this.#found.at > KEEP_MS) this.#found = { at: now, speaks: sniff(this.host, this.port) }
    return this.#found.speaks
  }
}

export interface MismatchQuestion {
  /** `host:port` as operators read it. */
  hostPort: string
  pool: string
  /** The target URL's scheme. */
  secure: boolean
  protocol: UpstreamProtocol
  speaks: Speaks
}

/** The hint for a protocol mismatch, or null when what the target speaks is what was asked. */
export function mismatchHint (q: MismatchQuestion): string | null {
  const pool = `pool "${q.pool}"`
  switch (q.speaks) {
    case 'tls': case 'tls-h2':
      if (q.secure) return null
      return `${q.hostPort} answered with TLS: it speaks HTTPS on that port; use an https:// URL for the target in ${pool}${q.speaks === 'tls-h2' && q.protocol !== 'http1' ? " and protocol: 'h2'" : ''}.`
    case 'http1':
      if (q.secure) return `${q.hostPort} answered a TLS ClientHello with an HTTP/1.x status line: it speaks plain HTTP; use an http:// URL for the target in ${pool}${q.protocol === 'h2' ? " and protocol: 'h2c' or 'http1'" : ''}.`
      return null
    case 'h2':
      if (q.secure) return `${q.hostPort} answered with an HTTP/2 frame in clear text: it speaks HTTP/2 without TLS; use an http:// URL and set protocol: 'h2c' on ${pool}.`
      if (q.protocol === 'http1') return `${q.hostPort} answered with an HTTP/2 frame: it speaks HTTP/2 only; set protocol: 'h2c' on ${pool}.`
      return null
    default:
      return null
  }
}
