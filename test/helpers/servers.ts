// Real servers on 127.0.0.1, port 0: well-behaved upstreams and the fault servers that make
// each failure of ERRORS.md happen for real.
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'

export interface Running {
  url: string
  port: number
  /** Requests this server has seen. */
  hits: number
  /** TCP connections it has accepted. */
  connections: number
  close: () => Promise<void>
}

interface Closable {
  close: (cb: () => void) => unknown
  on: (event: 'connection', listener: (socket: net.Socket) => void) => unknown
  address: () => string | AddressInfo | null
}

/** Tracks sockets so close() ends keep-alive connections too (nothing outlives a test). */
async function listen<S extends Closable & { listen: (port: number, host: string, cb: () => void) => unknown }> (server: S, at: ListenAt = {}): Promise<Running> {
  const sockets = new Set<net.Socket>()
  let running: Running | undefined
  server.on('connection', (socket) => {
    running!.connections++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  const host = at.host ?? '127.0.0.1'
  await new Promise<void>((resolve) => server.listen(at.port ?? 0, host, resolve))
  const port = (server.address() as AddressInfo).port
  running = {
    url: `http://${host}:${port}`,
    port,
    hits: 0,
    connections: 0,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  return running
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void

/** Where a server listens: 127.0.0.1 and a free port unless given (e.g. 127.0.0.2, a port in use on 127.0.0.1). */
export interface ListenAt { host?: string, port?: number }

/** An HTTP upstream; the default handler answers JSON describing the request it got. */
export async function startUpstream (name: string, handler?: Handler, at?: ListenAt): Promise<Running> {
  let running: Running | undefined
  const server = http.createServer((req, res) => {
    running!.hits++
    if (handler !== undefined) return handler(req, res)
    echo(name)(req, res)
  })
  running = await listen(server, at)
  return running
}

/** Answers with the request as the upstream saw it: method, url, headers, body length. */
export function echo (name: string): Handler {
  return (req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => { bytes += chunk.length })
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, bytes }))
    })
  }
}

/** A raw TCP server: `onSocket` decides what bytes (if any) the "upstream" sends. */
export async function startTcp (onSocket: (socket: net.Socket) => void): Promise<Running> {
  let running: Running | undefined
  const server = net.createServer((socket) => {
    running!.hits++
    socket.on('error', () => {})
    onSocket(socket)
  })
  running = await listen(server)
  return running
}

/**
 * A port that refuses every connection (ECONNREFUSED) for as long as it is held: the local end
 * of a loopback connection whose listener has closed. The port stays bound by that socket, so
 * no other server (a parallel test's port 0 included) can take it, and as nothing listens on
 * it, the kernel answers each SYN with a reset. `close` releases it.
 */
export async function startRefusing (): Promise<Running> {
  const listener = net.createServer()
  // Both ends must be up: the client's connect and the server's accept (either may come first).
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve))
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve))
  const holder = net.connect((listener.address() as AddressInfo).port, '127.0.0.1')
  holder.on('error', () => {})
  await new Promise<void>((resolve) => holder.once('connect', resolve))
  const peer = await accepted
  peer.on('error', () => {})
  // Stops listening now; close's callback would wait for the held connection to end.
  listener.close()
  const port = holder.localPort!
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    hits: 0,
    connections: 0,
    close: async () => {
      // A reset rather than a FIN: nothing lingers in FIN_WAIT or TIME_WAIT on the port, so a
      // test that lets it go can listen on it at once.
      if (holder.closed) return
      const closed = Promise.all([holder, peer].map(async (socket) => await new Promise((resolve) => socket.once('close', resolve))))
      holder.resetAndDestroy()
      peer.resetAndDestroy()
      await closed
      // On a busy machine the kernel may take a moment more to let go of the port: wait (a
      // bounded while) until it can be listened on, so the test that listens next can.
      await untilListenable(port)
    }
  }
}

/** Resolves once `port` on 127.0.0.1 can be listened on (at most about 2 s of tries). */
async function untilListenable (port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const probe = net.createServer()
    const free = await new Promise<boolean>((resolve) => {
      probe.once('error', () => { resolve(false) })
      probe.listen(port, '127.0.0.1', () => { resolve(true) })
    })
    if (free) {
      await new Promise<void>((resolve) => probe.close(() => { resolve() }))
      return
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** The URL of a refusing port (see startRefusing) held until the test ends. */
export async function deadTarget (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const refusing = await startRefusing()
  t.teardown(refusing.close)
  return refusing.url
}

/**
 * A loopback listener that never accepts, with its accept queue filled: a new TCP connect to
 * it hangs, as to a host that drops packets. The listener lives in a stopped child process
 * (Node itself always accepts), so only 127.0.0.1 is involved.
 */
export async function startBlackhole (): Promise<Running> {
  const { spawn } = await import('node:child_process')
  const child = spawn(process.execPath, ['-e',
    "const s=require('net').createServer().listen({port:0,host:'127.0.0.1',backlog:1},()=>console.log(s.address().port))"
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve) => child.stdout.once('data', (line: Buffer) => resolve(Number(String(line).trim()))))
  child.kill('SIGSTOP')
  // Fill the accept queue (backlog + 1 on Linux); further handshakes are dropped.
  const fillers: net.Socket[] = []
  let connected = 0
  for (let i = 0; i < 4; i++) {
    const socket = net.connect(port, '127.0.0.1', () => { connected++ })
    socket.on('error', () => {})
    fillers.push(socket)
  }
  const deadline = Date.now() + 2000
  // eslint-disable-next-line no-unmodified-loop-condition -- the connect callbacks count
  while (connected < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    hits: 0,
    connections: 0,
    close: async () => {
      for (const socket of fillers) socket.destroy()
      child.kill('SIGKILL')
      child.kill('SIGCONT')
      if (child.exitCode === null && child.signalCode === null) await new Promise((resolve) => child.once('exit', resolve))
    }
  }
}

/**
 * Why tests that make certificates cannot run here (the openssl CLI is missing), or null when
 * they can: for `t.test(name, { skip: opensslMissing ?? false }, ...)`, so a skip says so.
 */
export const opensslMissing: string | null = (await import('node:child_process')).spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0
  ? null
  : 'the openssl CLI is not installed, so no certificate can be made for this test'

/**
 * A self-signed certificate for 127.0.0.1, made with the openssl CLI; null (the caller skips,
 * saying why) where openssl is not installed.
 */
export async function selfSignedCert (): Promise<{ key: string, cert: string } | null> {
  const { execFileSync } = await import('node:child_process')
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'fastify-upstream-cert-'))
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' })
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') }
  } catch {
    return null
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** An HTTPS upstream with the given certificate. */
export async function startHttpsUpstream (tls: { key: string, cert: string }, handler: Handler): Promise<Running> {
  const https = await import('node:https')
  let running: Running | undefined
  const server = https.createServer(tls, (req, res) => {
    running!.hits++
    handler(req, res)
  })
  server.on('tlsClientError', () => {})
  running = await listen(server)
  running.url = running.url.replace('http:', 'https:')
  return running
}

export interface KeyPair { key: string, cert: string }

/**
 * A private CA and leaf certificates it signed, made with the openssl CLI (null where it is not
 * installed): `good` for 127.0.0.1, `expired` (valid only in 2020), `wrongName` (for
 * wrong.example). EC keys: each takes milliseconds, not an RSA key's second.
 */
export async function privateCa (): Promise<{ ca: string, good: KeyPair, expired: KeyPair, wrongName: KeyPair } | null> {
  const { execFileSync } = await import('node:child_process')
  const { mkdtempSync, readFileSync, writeFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'fastify-upstream-ca-'))
  const file = (name: string): string => join(dir, name)
  const openssl = (...args: string[]): void => { execFileSync('openssl', args, { stdio: 'ignore' }) }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  try {
    openssl('req', '-x509', ...ec, '-days', '2', '-subj', '/CN=fastify-upstream test CA', '-keyout', file('ca.key'), '-out', file('ca.pem'))
    // `openssl ca` (unlike `x509 -req`) can set any validity period, past ones included.
    writeFileSync(file('index.txt'), '')
    writeFileSync(file('serial'), '01\n')
    writeFileSync(file('ca.cnf'), [
      '[ca]', 'default_ca = local', '[local]', `dir = ${dir}`, `database = ${file('index.txt')}`, `new_certs_dir = ${dir}`,
      `serial = ${file('serial')}`, 'default_md = sha256', 'policy = any', 'copy_extensions = copy', 'unique_subject = no',
      '[any]', 'commonName = supplied', ''
    ].join('\n'))
    const leaf = (name: string, subject: string, san: string, dates: string[]): KeyPair => {
      openssl('req', '-new', ...ec, '-subj', `/CN=${subject}`, '-addext', `subjectAltName=${san}`, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`))
      openssl('ca', '-batch', '-notext', '-config', file('ca.cnf'), '-keyfile', file('ca.key'), '-cert', file('ca.pem'),
        '-in', file(`${name}.csr`), '-out', file(`${name}.pem`), ...dates)
      return { key: readFileSync(file(`${name}.key`), 'utf8'), cert: readFileSync(file(`${name}.pem`), 'utf8') }
    }
    return {
      ca: readFileSync(file('ca.pem'), 'utf8'),
      good: leaf('good', '127.0.0.1', 'IP:127.0.0.1', ['-days', '2']),
      expired: leaf('expired', '127.0.0.1', 'IP:127.0.0.1', ['-startdate', '20200101000000Z', '-enddate', '20200102000000Z']),
      wrongName: leaf('wrong', 'wrong.example', 'DNS:wrong.example', ['-days', '2'])
    }
  } catch {
    return null
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * What `process.getActiveResourcesInfo()` holds beyond `baseline` (taken at a child process's
 * start), once closing handles have had the next turns of the event loop to finish.
 */
export async function resourcesLeft (baseline: readonly string[]): Promise<string[]> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve))
  const left = process.getActiveResourcesInfo()
  for (const resource of baseline) left.splice(left.indexOf(resource), left.includes(resource) ? 1 : 0)
  return left
}
