// One request to one target outside the balancer, each phase timed, as `curl -w` would: the
// operator's "is it the target or the gateway?" check. It opens a fresh connection (no pool,
// no keep-alive) with the pool's TLS settings and timeouts, and a failure is classified by the
// gateway's one classifier, so it reads exactly as a proxied request's would.
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import type { TLSSocket } from 'node:tls'
import type { UpstreamPool } from '../pool/pool.js'
import { classify, classifyCredentialsFailure, GatewayError, GATEWAY_CODES } from '../errors/classify.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { probeHttp2 } from './probe-h2.js'
import type { ProbeResult } from './records.js'

export type { ProbeResult }

export async function probe (pool: UpstreamPool, url: string): Promise<ProbeResult> {
  const target = pool.find(url)
  const { timeouts, tls, health } = pool.config
  // A gRPC health check's path is a method a GET cannot call: the probe asks for / then.
  const address = new URL(health !== null && health.grpc === null ? health.path : '/', target.origin)
  const at = new Date().toISOString()
  // The probe carries the pool's credentials, as requests do; without them it tells nothing.
  let auth: Record<string, string> = {}
  if (pool.credentials !== null) {
    try {
      auth = await pool.credentials.headers()
    } catch (err) {
      const failed = classifyCredentialsFailure(err)
      return { pool: pool.name, target: target.url, url: address.href, at, ok: false, status: null, error: 'proxy_internal_error', phase: failed.phase, cause: failed.cause, ms: { dns: null, connect: null, tls: null, firstByte: null, total: 0 } }
    }
  }
  if (pool.config.protocol !== 'http1') {
    const outcome = await probeHttp2(target, pool.config, address, auth)
    if (outcome !== 'http1') return { pool: pool.name, target: target.url, url: address.href, at, ...outcome }
  }
  const secure = address.protocol === 'https:'
  const started = performance.now()
  const since = (): number => Math.round((performance.now() - started) * 10) / 10
  const ms: ProbeResult['ms'] = { dns: null, connect: null, tls: null, firstByte: null, total: 0 }
  const progress = { connected: false, requestSent: false, responseStarted: false }

  return await new Promise<ProbeResult>((resolve) => {
    let done = false
    const timers: NodeJS.Timeout[] = []
    const finish = (result: Pick<ProbeResult, 'ok' | 'status' | 'error' | 'phase' | 'cause'>): void => {
      if (done) return
      done = true
      for (const timer of timers) clearTimeout(timer)
      ms.total = since()
      resolve({ pool: pool.name, target: target.url, url: address.href, at, ...result, ms })
    }
    const options = {
      method: 'GET',
      agent: false as const,
      headers: Object.assign({ host: target.hostHeader, 'user-agent': 'fastify-upstream-probe', connection: 'close' }, auth),
      ...(secure
        ? {
            rejectUnauthorized: tls.rejectUnauthorized,
            ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
            ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
            ...(tls.key !== undefined ? { key: tls.key } : {}),
            ...(tls.servername !== undefined ? { servername: tls.servername } : {})
          }
        : {})
    }
    const request = (secure ? https : http).request(address, options, (res) => {
      progress.responseStarted = true
      ms.firstByte = since()
      res.resume()
      res.once('end', () => { finish({ ok: true, status: res.statusCode ?? null, error: null, phase: null, cause: null }) })
      res.once('error', fail)
    })
    function fail (err: unknown): void {
      const verdict = classify(err, progress)
      // No client waits on a probe, so no failure here is client_aborted.
      finish({ ok: false, status: null, error: verdict.error as ProxyErrorType, phase: verdict.phase, cause: verdict.cause })
      request.destroy()
    }
    const cut = (after: number | false, code: string, words: string): void => {
      if (after !== false) timers.push(setTimeout(() => { fail(new GatewayError(code, words)) }, after))
    }
    cut(timeouts.connect, GATEWAY_CODES.connectTimeout, 'no connection within timeouts.connect')
    request.once('socket', (socket) => {
      socket.once('lookup', () => { ms.dns = since() })
      socket.once('connect', () => {
        ms.connect = since()
        progress.connected = true
        if (!secure) {
          clearTimeout(timers[0])
          cut(timeouts.headers, GATEWAY_CODES.headersTimeout, 'no response headers within timeouts.headers')
        }
      })
      if (secure) {
        (socket as TLSSocket).once('secureConnect', () => {
          ms.tls = since()
          clearTimeout(timers[0])
          cut(timeouts.headers, GATEWAY_CODES.headersTimeout, 'no response headers within timeouts.headers')
        })
      }
    })
    request.once('finish', () => { progress.requestSent = true })
    request.once('error', fail)
    request.end()
  })
}
