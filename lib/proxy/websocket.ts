// WebSocket routes: a transparent tunnel through the pool. The client's handshake goes to a
// target the balancer picks (health, limits, connect retries as for any request), with every
// end-to-end header; the client gets the upstream's own answer (its 101, or its refusal with
// its body); after a 101, bytes are piped both ways untouched until either side closes.
//
// Node hands every upgrade request to the server's 'upgrade' listeners, never to Fastify. The
// listener here sends it through Fastify's routing with a response of its own on the socket,
// so hooks, rate limits and request ids apply, and anything that is not a handshake for a
// websocket route is answered as plain HTTP (Upgrade removed) instead of hanging. The route
// handler then opens the tunnel (see registerRoute).
import { ServerResponse, type IncomingMessage, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { PassThrough, type Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { Config, RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import type { Target } from '../pool/target.js'
import { Candidates } from './candidates.js'
import { TargetTry, sendTry } from './try.js'
import { RoomWait } from './queue.js'
import { rewriteLocations } from './location.js'
import { afterFailure, backoff, conditionOf, shouldRetryStatus } from './retry.js'
import { appendList, forwardRequestHeaders, forwardResponseHeaders, viaPseudonym, type ForwardingSettings } from './forwarding.js'
import { classify, GatewayError, GATEWAY_CODES, type Progress } from '../errors/classify.js'
import { makeFailure, type AttemptRecord, type Failure, type FailureContext } from '../errors/failure.js'
import { logClientAborted, logFailure } from '../errors/log.js'
import { isFullExposure, proxyStatusMember } from '../errors/problem.js'
import { retryAfterOf } from '../errors/respond.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import { waitForCredentials } from '../pool/credentials.js'
import type { Recorder, TunnelEvent } from '../observe/recorder.js'

const kUpgrade = Symbol('fastify-upstream.upgrade')

/** What Node handed over with an upgrade request: the client's socket and bytes already read. */
interface Upgrade {
  socket: Socket
  head: Buffer
}

type UpgradeRequest = IncomingMessage & { [kUpgrade]?: Upgrade }

/** Is this a WebSocket handshake the gateway took in through its 'upgrade' listener? */
export function isWebSocketHandshake (request: FastifyRequest): boolean {
  return (request.raw as UpgradeRequest)[kUpgrade] !== undefined &&
    request.method === 'GET' &&
    request.headers.upgrade?.toLowerCase() === 'websocket'
}

/** What a websocket route gives its tunnels. */
export interface TunnelRoute {
  route: RouteConfig
  pool: UpstreamPool
  config: Config
  /** Logs the failure once and answers it (the route's error responder). */
  answer: (request: FastifyRequest, reply: FastifyReply, failure: Failure) => void
  /** Counts handshakes and tunnels for the status page, when there is one. */
  recorder: Recorder | null
}

/** The gateway's websocket side: the server's 'upgrade' listener and every live tunnel. */
export class WebSockets {
  readonly #tunnels = new Set<Tunnel>()
  readonly #server: Server
  readonly #routing: (req: IncomingMessage, res: ServerResponse) => void
  /** Prefixes of the gateway's routes, longest first, and whether each is a websocket route. */
  readonly #prefixes: Array<{ prefix: string, websocket: boolean }>

  constructor (app: FastifyInstance, routes: readonly RouteConfig[]) {
    this.#server = app.server as Server
    this.#routing = app.routing.bind(app)
    this.#prefixes = routes.map((r) => ({ prefix: r.prefix.replace(/\/+$/, ''), websocket: r.websocket }))
      .sort((a, b) => b.prefix.length - a.prefix.length)
    this.#server.on('upgrade', this.#onUpgrade)
  }

  /** Ends every tunnel and handshake (app.close()): an open tunnel would hold the server open. */
  close (): void {
    this.#server.off('upgrade', this.#onUpgrade)
    for (const tunnel of this.#tunnels) tunnel.shutdown()
    this.#tunnels.clear()
  }

  /** Starts a tunnel for a handshake that reached a websocket route. */
  open (request: FastifyRequest, reply: FastifyReply, path: string, context: TunnelRoute): void {
    // `path`: the route's path rewritten (rewritePrefix), with the query as the client sent it.
    const tunnel = new Tunnel(request, reply, (request.raw as UpgradeRequest)[kUpgrade]!, path, context, () => this.#tunnels.delete(tunnel))
    this.#tunnels.add(tunnel)
    tunnel.start()
  }

  readonly #onUpgrade = (req: IncomingMessage, duplex: Duplex, head: Buffer): void => {
    // Beside other 'upgrade' listeners (the app's own WebSocket server), take only what a
    // websocket route serves; alone, take everything, or Node would leave it unanswered.
    if (this.#server.listenerCount('upgrade') > 1 && !this.#servesWebSocket(req.url ?? '/')) return
    const socket = duplex as Socket
    // Node took its own listeners off this socket: without one, an error would crash the process.
    socket.on('error', () => {})
    ;(req as UpgradeRequest)[kUpgrade] = { socket, head }
    const res = new ServerResponse(req)
    // Node's parser has let go of this socket, so it carries this one answer and closes.
    res.shouldKeepAlive = false
    res.assignSocket(socket)
    res.once('finish', () => { socket.destroySoon() })
    this.#routing(req, res)
  }

  #servesWebSocket (url: string): boolean {
    const path = url.split('?', 1)[0]!
    const match = this.#prefixes.find(({ prefix }) => prefix === '' || path === prefix || path.startsWith(`${prefix}/`))
    return match?.websocket ?? false
  }
}

/** One try of the handshake on one target (undici's callback-style handler). */
class Handshake extends TargetTry implements Pick<Dispatcher.DispatchHandler, 'onConnect' | 'onHeaders' | 'onData' | 'onComplete' | 'onError' | 'onUpgrade'> {
  abortTry: ((reason?: Error) => void) | null = null
  readonly progress: Progress = { connected: false, requestSent: false, responseStarted: false }
  #abandoned = false
  #released = false
  #timer: NodeJS.Timeout | null = null

  constructor (private readonly tunnel: Tunnel, target: Target) {
    super(target)
  }

  get awaitingConnection (): boolean {
    return !this.progress.connected && !this.#released
  }

  /** timeouts.connect, to the millisecond (undici's own timer ticks about once a second). */
  startConnectTimer (ms: number, onTimeout: () => void): void {
    this.#timer = setTimeout(onTimeout, ms)
  }

  /** The tunnel has left this try behind: what undici says of it from now on is ignored. */
  abandon (reason?: Error): void {
    this.#abandoned = true
    this.abortTry?.(reason ?? new GatewayError(GATEWAY_CODES.clientAborted, 'abandoned by the gateway'))
    this.release()
  }

  /** The target's slot is free again: the try failed, or the refusal or tunnel ended. */
  release (): void {
    this.#clearTimer()
    if (this.#released) return
    this.#released = true
    this.target.inFlight--
    this.tunnel.pool.released()
  }

  onConnect (abort: (reason?: Error) => void): void {
    this.abortTry = abort
    this.#clearTimer()
    if (this.#abandoned) {
      abort(new Error('abandoned by the gateway'))
      return
    }
    this.progress.connected = true
  }

  // timeouts.headers for the upstream's answer to the handshake, from the request sent.
  onRequestSent (): void {
    if (this.#abandoned || this.progress.responseStarted) return
    this.progress.requestSent = true
    const ms = this.tunnel.route.timeouts.headers
    if (ms === false) return
    this.#timer = setTimeout(() => {
      this.abortTry?.(new GatewayError(GATEWAY_CODES.headersTimeout, `no answer to the handshake within ${ms} ms`))
    }, ms)
  }

  onUpgrade (statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: Duplex): void {
    this.#clearTimer()
    if (this.#abandoned) {
      socket.destroy()
      return
    }
    this.status = statusCode
    this.progress.responseStarted = true
    this.tunnel.onOpen(this, (rawHeaders ?? []) as Buffer[], socket as Socket)
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (this.#abandoned) return false
    // An interim answer (100, 103): the final one follows.
    if (statusCode < 200) return true
    this.#clearTimer()
    this.status = statusCode
    this.progress.responseStarted = true
    return this.tunnel.onRefusal(this, statusCode, rawHeaders, resume)
  }

  onData (chunk: Buffer): boolean {
    return !this.#abandoned && this.tunnel.onRefusalData(chunk)
  }

  onComplete (): void {
    this.release()
    if (!this.#abandoned) this.tunnel.onRefusalEnd()
  }

  onError (err: Error): void {
    this.release()
    if (!this.#abandoned) this.tunnel.onTryError(this, err)
  }

  #clearTimer (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }
}

/** One client's handshake and, once the upstream said 101, its tunnel. */
class Tunnel {
  readonly startedAt = performance.now()
  readonly attempts: AttemptRecord[] = []
  readonly route: RouteConfig
  readonly pool: UpstreamPool
  readonly #settings: ForwardingSettings
  /** `Via` as this gateway adds it to the answers it passes on: its public name. */
  readonly #via: string
  readonly #headers: Record<string, string | string[] | undefined>
  readonly #candidates: Candidates
  #try: Handshake | null = null
  #retries = 0
  /** A pending wait: for room (limits), or the backoff before a retry. */
  #waiting: { cancel: () => void } | null = null
  #waitingPhase: AttemptRecord['phase'] = 'route'
  /** Waiting in line for a target with room (limits.queueTimeout over the whole wait). */
  readonly #room = new RoomWait()
  /** The handshake has ended one way or another; late events are ignored. */
  #settled = false
  /** The refusal's body, on its way to the client. */
  #body: PassThrough | null = null
  /** After the 101: the upstream's socket. */
  #upstream: Socket | null = null
  /** Bytes the client sent during the handshake, kept for the upstream. */
  readonly #early: Buffer[] = []
  /** The token the last try carried (pools.<name>.auth.token). */
  #sentToken: string | null = null
  /** An upstream 401 already made this handshake ask for a new token: a second one goes to the client. */
  #reauthorized = false

  constructor (
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly upgrade: Upgrade,
    readonly path: string,
    readonly context: TunnelRoute,
    private readonly onEnd: () => void
  ) {
    this.route = context.route
    this.pool = context.pool
    this.#settings = { proxyName: context.config.errors.proxyName, requestIdHeader: context.config.requestIdHeader, via: viaPseudonym(context.config, context.config.errors.proxyName) }
    this.#via = `1.1 ${context.config.errors.proxyName}`
    // Everything end to end, as the client sent it (Authorization, Origin, Cookie, every offered
    // subprotocol, Sec-WebSocket-Key/Version/Extensions), plus the forwarding headers. Connection
    // and Upgrade are hop-by-hop: undici writes its own `connection: upgrade` and
    // `upgrade: websocket` for the `upgrade` option (and refuses them as headers).
    this.#headers = forwardRequestHeaders(request, request.headers, this.#settings) as Record<string, string | string[] | undefined>
    this.#candidates = new Candidates(this.pool, request)
  }

  get ms (): number {
    return performance.now() - this.startedAt
  }

  start (): void {
    this.pool.budget.request()
    const socket = this.upgrade.socket
    socket.once('close', this.#onClientClose)
    // Read while the upstream decides: a client that gives up sends its FIN ('end'), which an
    // unread socket would never show, and its try would hold a slot until timeouts.headers.
    // A WebSocket client sends nothing before the 101; anything it does send is kept.
    socket.on('data', this.#onEarlyData)
    socket.once('end', this.#onClientClose)
    if (this.#candidates.empty) {
      this.#failOutage()
      return
    }
    this.#tryNext()
  }

  #tryNext (): void {
    this.#try = null
    const credentials = this.pool.credentials
    if (credentials !== null && !credentials.ready()) {
      this.#waitingPhase = 'send'
      this.#waiting = waitForCredentials(credentials, () => {
        this.#waiting = null
        if (!this.#settled) this.#tryNext()
      }, (details) => {
        this.#waiting = null
        this.#fail('proxy_internal_error', details)
      })
      return
    }
    const target = this.#candidates.pick()
    if (target === 'none') {
      this.#giveUp()
      return
    }
    if (target === 'full') {
      this.#queue()
      return
    }
    this.#room.reset()
    const handshake = new Handshake(this, target)
    this.#try = handshake
    const headers: Record<string, unknown> = Object.assign({}, this.#headers, { host: target.hostHeader })
    if (credentials !== null) this.#sentToken = credentials.apply(headers)
    // An upgraded socket leaves the target's pool, so open tunnels never hold its connections.
    sendTry(handshake, handshake as Dispatcher.DispatchHandler, this.route.timeouts, {
      path: this.path,
      method: 'GET',
      headers: headers as Record<string, string>,
      upgrade: 'websocket'
    }, (err) => { this.onTryError(handshake, err) })
  }

  /** Every target that may take it is full: wait in line for room, as an HTTP request does. */
  #queue (): void {
    this.#waitingPhase = 'queue'
    this.#waiting = this.#room.wait(this.pool, 'upgrade', () => {
      this.#waiting = null
      if (!this.#settled) this.#tryNext()
    }, (why) => {
      this.#waiting = null
      this.#fail('connection_limit_reached', { phase: 'queue', why, retryAfter: 1, queueMs: this.#room.waitedMs })
    })
  }

  onTryError (handshake: Handshake, err: unknown): void {
    const broken = this.#body !== null
    if (this.#settled && !broken) return
    const verdict = classify(err, handshake.progress)
    if (verdict.error === 'client_aborted') {
      if (!broken) this.#aborted(verdict.phase)
      return
    }
    const { error, phase, cause } = verdict
    const record = handshake.record(error, cause, phase)
    if (broken) {
      // The refusal's body broke: its status is out, so the client connection is cut.
      this.attempts[this.attempts.length - 1] = record
      this.pool.recordFailure(handshake.target, error, cause)
      this.#body!.destroy()
      logFailure(this.request, this.#failure(error, { phase, cause, status: handshake.status!, receivedStatus: handshake.status! }), true)
      this.upgrade.socket.destroy()
      return
    }
    this.attempts.push(record)
    // A refused or unreachable target counts against it, as for any request (outlier ejection).
    this.pool.recordFailure(handshake.target, error, cause)
    if (conditionOf(error, phase) === 'connect-failure') this.#candidates.unreachable(handshake.target)
    const next = afterFailure({ error, phase, method: 'GET', policy: this.route.retry, retries: this.#retries, replayable: true, unreplayableWhy: '' },
      () => this.#candidates.hasAnother(), this.pool.budget)
    if (!next.retry) {
      this.#fail(error, { phase, cause, note: next.note })
      return
    }
    this.#retryLater(next.free)
  }

  #retryLater (immediate = false): void {
    this.#retries++
    this.#tryAfter(immediate ? 0 : backoff(this.#retries), 'connect')
  }

  #tryAfter (ms: number, phase: AttemptRecord['phase']): void {
    this.#try = null
    this.#waitingPhase = phase
    const timer = setTimeout(() => {
      this.#waiting = null
      if (!this.#settled) this.#tryNext()
    }, ms)
    this.#waiting = { cancel: () => { clearTimeout(timer) } }
  }

  /**
   * An upstream 401 to a handshake that carried the pool's token: the first has the token
   * refreshed (Credentials.unauthorized bounds how often) and the handshake sent again with
   * the new one. A second 401 goes to the client as sent.
   */
  #replayUnauthorized (): boolean {
    const credentials = this.pool.credentials
    if (credentials === null || !credentials.hasToken || this.#reauthorized) return false
    this.#reauthorized = true
    return credentials.unauthorized(this.#sentToken)
  }

  /** Out of targets for a retry: the last try's failure stands. */
  #giveUp (): void {
    const last = [...this.attempts].reverse().find((a) => a.error !== null)
    if (last === undefined) this.#failOutage()
    else this.#fail(last.error!, { phase: last.phase, cause: last.cause, note: 'not retried: no other target can take traffic' })
  }

  /** The upstream answered the handshake with something else than 101: the client gets it as sent. */
  onRefusal (handshake: Handshake, status: number, rawHeaders: Buffer[], resume: () => void): boolean {
    this.pool.recordResponse(handshake.target, status, handshake.ms)
    this.attempts.push(handshake.record(null, null, 'headers'))
    if (status === 401 && this.#replayUnauthorized()) {
      // The upstream refused the gateway's token: the handshake goes again with a new one, as
      // an HTTP request would (a handshake has no body to keep). Not a retry: the budget and
      // retry.retries are untouched.
      handshake.abandon()
      this.#tryAfter(0, 'send')
      return false
    }
    if (shouldRetryStatus(status, 'GET', this.route.retry, this.#retries, true) && this.#candidates.hasAnother() && this.pool.budget.tryRetry()) {
      handshake.abandon()
      this.#retryLater()
      return false
    }
    const headers = forwardResponseHeaders(rawHeaders, this.#via)
    if (this.context.config.errors.intercept.has(status)) {
      // As for any response (errors.intercept): the status stays, the body is the gateway's.
      handshake.abandon()
      this.#fail('upstream_error_status', { phase: 'headers', status, receivedStatus: status, retryAfter: retryAfterOf(headers['retry-after']) })
      return false
    }
    this.#settle()
    this.#count('refused')
    const full = isFullExposure(this.context.config.errors, this.request)
    // A refusal that redirects (to a login page) points through the gateway, as any answer.
    rewriteLocations(headers, this.request, this.route, this.pool)
    headers['proxy-status'] = appendList(headers['proxy-status'] as string | undefined, proxyStatusMember(null, this.#settings.proxyName, full, status))
    const body = new PassThrough()
    body.on('drain', resume)
    // The client left before the refusal's end: nobody reads the rest.
    body.once('close', () => { if (!body.writableFinished) handshake.abandon() })
    this.#body = body
    this.reply.code(status).headers(headers).send(body)
    return true
  }

  onRefusalData (chunk: Buffer): boolean {
    return this.#body?.write(chunk) ?? false
  }

  onRefusalEnd (): void {
    this.#body?.end()
  }

  /** The upstream said 101: the client gets that answer, then bytes flow both ways untouched. */
  onOpen (handshake: Handshake, rawHeaders: Buffer[], upstream: Socket): void {
    const client = this.upgrade.socket
    if (this.#settled || client.destroyed) {
      upstream.destroy()
      handshake.release()
      return
    }
    this.#upstream = upstream
    this.#settle(true)
    this.pool.recordResponse(handshake.target, 101, handshake.ms)
    this.#count('opened')
    upstream.on('error', () => {})
    // From here the gateway writes the socket itself: Fastify must not answer, and the response
    // object built for the handshake lets go of the socket.
    this.reply.hijack()
    this.reply.raw.detachSocket(client)
    // A tunnel lives as long as its two ends want: no idle timer, no Nagle delay on messages.
    for (const socket of [client, upstream]) {
      socket.setTimeout(0)
      socket.setNoDelay(true)
    }
    client.write(this.#switchingHead(rawHeaders))
    const early = Buffer.concat([this.upgrade.head, ...this.#early])
    if (early.length > 0) upstream.write(early)
    const idle = this.#idleTimer(client, upstream)
    let ended = false
    const end = (): void => {
      // Both sockets' 'close' lead here; the tunnel ends once.
      if (ended) return
      ended = true
      this.#count('closed')
      if (idle !== null) clearTimeout(idle)
      client.destroy()
      upstream.destroy()
      handshake.release()
      this.onEnd()
    }
    client.once('close', end)
    upstream.once('close', end)
    // pipe() passes a half-close on as one (WebSocket's closing handshake ends with the server's
    // FIN) and keeps each direction to the reader's pace.
    client.pipe(upstream)
    upstream.pipe(client)
  }

  /**
   * A route that sets its own timeouts.body gives its tunnels an idle limit: silence both ways
   * for that long ends the tunnel. Otherwise none: a quiet chat or a dashboard waiting for
   * events may stay open for hours, and the two ends have their own pings for a dead peer.
   */
  #idleTimer (client: Socket, upstream: Socket): NodeJS.Timeout | null {
    const ms = this.route.tunnelIdle
    if (ms === null) return null
    const timer = setTimeout(() => {
      this.request.log.info({ method: this.request.method, url: this.request.url, pool: this.pool.name, target: this.#try?.target.hostPort ?? null, ms: Math.round(this.ms) },
        `websocket tunnel closed: no data either way for ${ms} ms (timeouts.body of this route)`)
      client.destroy()
    }, ms)
    const refresh = (): void => { timer.refresh() }
    client.on('data', refresh)
    upstream.on('data', refresh)
    return timer
  }

  /**
   * The upstream's 101 as the client gets it: its headers (subprotocol, extensions, accept key,
   * cookies) with Connection and Upgrade, plus the gateway's own (request id, Via, Proxy-Status).
   */
  #switchingHead (rawHeaders: Buffer[]): string {
    const full = isFullExposure(this.context.config.errors, this.request)
    const headers: Record<string, unknown> = { ...this.reply.getHeaders(), ...forwardResponseHeaders(rawHeaders, this.#via) }
    headers.connection = 'Upgrade'
    headers.upgrade = upgradeOf(rawHeaders) ?? 'websocket'
    headers['proxy-status'] = appendList(headers['proxy-status'] as string | undefined, proxyStatusMember(null, this.#settings.proxyName, full, 101))
    const lines = ['HTTP/1.1 101 Switching Protocols']
    for (const [name, value] of Object.entries(headers)) {
      for (const one of Array.isArray(value) ? value : [value]) {
        const text = String(one)
        // A value set by a hook could hold a line break: it would split the answer in two.
        if (one !== undefined && !/[\r\n]/.test(text)) lines.push(`${name}: ${text}`)
      }
    }
    return `${lines.join('\r\n')}\r\n\r\n`
  }

  /** The gateway is closing: an open tunnel is cut, a handshake under way is dropped. */
  shutdown (): void {
    if (this.#upstream !== null) {
      this.upgrade.socket.destroy()
      return
    }
    if (this.#settled) return
    this.#settle()
    this.#try?.abandon()
    this.request.log.info({ method: this.request.method, url: this.request.url, pool: this.pool.name, ms: Math.round(this.ms) },
      'websocket handshake cut: the gateway is closing')
    this.upgrade.socket.destroy()
  }

  readonly #onEarlyData = (chunk: Buffer): void => {
    this.#early.push(chunk)
  }

  readonly #onClientClose = (): void => {
    if (this.#settled) return
    const progress = this.#try?.progress
    this.#aborted(progress === undefined ? this.#waitingPhase : progress.requestSent ? 'headers' : progress.connected ? 'send' : 'connect')
  }

  #aborted (phase: string): void {
    this.#settle()
    this.#try?.abandon()
    this.upgrade.socket.destroy()
    this.context.recorder?.aborted(this.pool.name, this.#try?.target.hostPort ?? null)
    logClientAborted(this.request, phase, this.pool.name, this.#try?.target.hostPort ?? null, this.ms)
  }

  /** No target to try: why (destination_unavailable, or the DNS failure of a pool with none yet). */
  #failOutage (): void {
    const outage = this.pool.outage()
    this.#fail(outage.error, outage.context)
  }

  #count (event: TunnelEvent): void {
    this.context.recorder?.tunnel(this.pool.name, this.#try?.target.hostPort ?? null, event)
  }

  #fail (error: ProxyErrorType, context: Omit<FailureContext, 'ms'>): void {
    this.#settle()
    this.#count('failed')
    this.context.answer(this.request, this.reply, this.#failure(error, context))
  }

  #failure (error: ProxyErrorType, context: Omit<FailureContext, 'ms'>): Failure {
    return makeFailure(error, Object.assign({
      pool: this.pool.name,
      target: this.#try?.target.hostPort ?? null,
      attempts: this.attempts,
      ms: this.ms,
      timeouts: this.route.timeouts,
      healthPath: this.pool.config.health?.path ?? null
    }, context))
  }

  /** The handshake is over: answered, abandoned, or (`open`) a tunnel that ends on its own. */
  #settle (open = false): void {
    if (this.#settled) return
    this.#settled = true
    const socket = this.upgrade.socket
    socket.pause()
    socket.off('data', this.#onEarlyData)
    socket.off('end', this.#onClientClose)
    socket.off('close', this.#onClientClose)
    this.#waiting?.cancel()
    this.#waiting = null
    if (!open) this.onEnd()
  }
}

/** The protocol the upstream's 101 switched to (its Upgrade field, a hop-by-hop one). */
function upgradeOf (raw: Buffer[]): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toString('latin1').toLowerCase() === 'upgrade') return raw[i + 1]!.toString('latin1')
  }
  return undefined
}
