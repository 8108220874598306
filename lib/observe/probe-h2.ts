// The probe over HTTP/2, for pools whose `protocol` is 'h2' or 'h2c': one fresh connection
// (TLS with ALPN, or clear text with prior knowledge), one GET, each phase timed as probe.ts
// times HTTP/1.1. A TLS target that does not choose h2 by ALPN is left to the HTTP/1.1 probe,
// as the pool's own connections fall back to HTTP/1.1 there.
import http2 from 'node:http2'
import net from 'node:net'
import tls from 'node:tls'
import { performance } from 'node:perf_hooks'
import type { PoolConfig } from '../options/config.js'
import type { Target } from '../pool/target.js'
import { classify, GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import type { ProbeResult } from './records.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'

export type ProbeOutcome = Pick<ProbeResult, 'ok' | 'status' | 'error' | 'phase' | 'cause' | 'ms'>

/** The outcome, or 'http1' when a TLS target chose HTTP/1.1 by ALPN. */
export async function probeHttp2 (target: Target, config: PoolConfig, address: URL, auth: Record<string, string>): Promise<ProbeOutcome | 'http1'> {
  const { timeouts, tls: tlsConfig } = config
  const secure = address.protocol === 'https:'
  const host = address.hostname.replace(/^\[|\]$/g, '')
  const port = Number(address.port !== '' ? address.port : (secure ? 443 : 80))
  const started = performance.now()
  const since = (): number => Math.round((performance.now() - started) * 10) / 10
  const ms: ProbeResult['ms'] = { dns: null, connect: null, tls: null, firstByte: null, total: 0 }
  const progress = { connected: false, requestSent: false, responseStarted: false }
  const socket: net.Socket = secure
    ? tls.connect({
      host,
      port,
      ALPNProtocols: ['h2', 'http/1.1'],
      rejectUnauthorized: tlsConfig.rejectUnauthorized,
      ...(tlsConfig.ca !== undefined ? { ca: tlsConfig.ca } : {}),
      ...(tlsConfig.cert !== undefined ? { cert: tlsConfig.cert } : {}),
      ...(tlsConfig.key !== undefined ? { key: tlsConfig.key } : {}),
      servername: tlsConfig.servername ?? target.hostHeader.replace(/:\d+$/, '')
    })
    : net.connect({ host, port })
  return await new Promise((resolve) => {
    let session: http2.ClientHttp2Session | null = null
    let timer: NodeJS.Timeout | null = null
    let done = false
    const finish = (outcome: Omit<ProbeOutcome, 'ms'> | 'http1'): void => {
      if (done) return
      done = true
      if (timer !== null) clearTimeout(timer)
      ms.total = since()
      session?.destroy()
      socket.destroy()
      resolve(outcome === 'http1' ? outcome : { ...outcome, ms })
    }
    const fail = (err: unknown): void => {
      const verdict = classify(err, progress)
      finish({ ok: false, status: null, error: verdict.error as ProxyErrorType, phase: verdict.phase, cause: verdict.cause })
    }
    const cut = (after: number | false, code: string, words: string): void => {
      if (timer !== null) clearTimeout(timer)
      timer = after === false ? null : setTimeout(() => { fail(new GatewayError(code, words)) }, after)
    }
    const request = (): void => {
      cut(timeouts.headers, GATEWAY_CODES.headersTimeout, 'no response headers within timeouts.headers')
      session = http2.connect(address.origin, { createConnection: () => socket })
      session.on('error', fail)
      const stream = session.request({ ':path': address.pathname + address.search, ':authority': target.hostHeader, 'user-agent': 'fastify-upstream-probe', ...auth })
      progress.requestSent = true
      stream.on('response', (headers) => {
        progress.responseStarted = true
        ms.firstByte = since()
        const status = Number(headers[':status'])
        stream.resume()
        stream.once('end', () => { finish({ ok: true, status, error: null, phase: null, cause: null }) })
      })
      stream.on('error', fail)
    }
    cut(timeouts.connect, GATEWAY_CODES.connectTimeout, 'no connection within timeouts.connect')
    socket.once('lookup', () => { ms.dns = since() })
    socket.once('connect', () => {
      ms.connect = since()
      progress.connected = true
      if (!secure) request()
    })
    socket.once('secureConnect', () => {
      ms.tls = since()
      if ((socket as tls.TLSSocket).alpnProtocol !== 'h2') finish('http1')
      else request()
    })
    socket.once('error', fail)
  })
}
