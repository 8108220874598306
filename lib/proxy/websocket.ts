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
import { ServerResponse, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { PassThrough, type Duplex } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { Config, RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import type { Target } from '../pool/target.js'
import { TargetTry, sendTry } from './try.js'
import { rewriteLocations } from './location.js'
import { shouldRetryStatus } from './retry.js'
import { TrySequence, type FailureDetails, type Replay } from './tries.js'
import { appendList, forwardResponseHeaders } from './forwarding.js'
import type { RewrittenRequest } from './rewrite.js'
import { withCookies } from '../routing/cookies.js'
import type { Routed } from '../routing/router.js'
import { classify, GatewayError, GATEWAY_CODES, type Progress } from '../errors/classify.js'
import { makeFailure, type Failure, type FailureContext } from '../errors/failure.js'
import { logClientAborted, logFailure } from '../errors/log.js'
import { isFullExposure, proxyStatusMember } from '../errors/problem.js'
import { retryAfterOf } from '../errors/respond.js'
import type { ProxyErrorType } from '../errors/taxonomy.js'
import type { Recorder, TunnelEvent } from '../observe/recorder.js'
import { keepBodyAfterUpgrade } from './upgrade-body.js'

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
  #prefixes: Array<{ prefix: string, websocket: boolean }> = []

  constructor (app: FastifyInstance, routes: readonly RouteConfig[]) {
    this.#server = app.server as Server
    this.#routing = app.routing.bind(app)
    this.addRoutes(routes)
    this.#server.on('upgrade', this.#onUpgrade)
  }

  /** Routes of a later registration of the plugin in the same app: one listener serves them all. */
  addRoutes (routes: readonly RouteConfig[]): void {
    this.#prefixes = [...this.#prefixes, ...routes.map((r) => ({ prefix: r.prefix.replace(/\/+$/, ''), websocket: r.websocket }))]
      .sort((a, b) => b.prefix.length - a.prefix.length)
  }

  /** Ends every tunnel and handshake (app.close()): an open tunnel would hold the server open. */
  close (): void {
    this.#server.off('upgrade', this.#onUpgrade)
    for (const tunnel of this.#tunnels) tunnel.shutdown()
    this.#tunnels.clear()
  }

  /** Starts a tunnel for a handshake that reached a websocket route. */
  open (request: FastifyRequest, reply: FastifyReply, path: string, upstream: RewrittenRequest, routed: Routed, context: TunnelRoute): void {
    // `path`: the route's path rewritten (rewritePrefix), with the query as the client sent it.
    const tunnel = new Tunnel(request, reply, (request.raw as UpgradeRequest)[kUpgrade]!, path, upstream.headers, context, () => this.#tunnels.delete(tunnel))
    tunnel.pinnedHost = upstream.host
    tunnel.routed = routed
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
    // Anything but a websocket handshake goes on as plain HTTP; its body is still on the socket.
    if (req.method !== 'GET' || req.headers.upgrade?.toLowerCase() !== 'websocket') keepBodyAfterUpgrade(req, socket, head)
    const res = new ServerResponse(req)
    // Node's parser has let go of this socket, so it carries this one answer and closes.
    res.shouldKeepAlive = false
    res.assignSocket(socket)
    // Node's server let go of this socket, and with it of passing its 'drain' on to the
    // response: without this, an answer larger than the socket's buffer would wait forever.
    const drained = (): void => { res.emit('drain') }
    socket.on('drain', drained)
    res.once('finish', () => {
      socket.off('drain', drained)
      socket.destroySoon()
    })
    this.#routing(req, res)
  }

  #servesWebSocket (url: string): boolean {
    const path = url.split('?', 1)[0]!
    const match = this.#prefixes.find(({ prefix }) => prefix === '' || path === prefix || path.startsWith(`${prefix}/`))
    return match?.websocket ?? false
  }
}

/**
 * One try of the handshake on one target: undici's dispatch handler (its controller API). A
 * handshake has no body, so it has gone out when undici starts it.
 */
class Handshake extends TargetTry implements Dispatcher.DispatchHandler {
  readonly progress: Progress = { connected: false, requestSent: false, responseStarted: false }
  #controller: Dispatcher.DispatchController | null = null
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
    if (this.progress.connected || this.#released) return
    this.#timer = setTimeout(onTimeout, ms)
  }

  /** The tunnel has left this try behind: what undici says of it from now on is ignored. */
  abandon (reason?: Error): void {
    this.#abandoned = true
    this.#controller?.abort(reason ?? new GatewayError(GATEWAY_CODES.clientAborted, 'abandoned by the gateway'))
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

  /** The client can take more of a refusal's body. */
  resume (): void {
    this.#controller?.resume()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    this.#clearTimer()
    if (this.#abandoned) {
      controller.abort(new GatewayError(GATEWAY_CODES.clientAborted, 'abandoned by the gateway'))
      return
    }
    this.progress.connected = true
    // timeouts.headers for the upstream's answer to the handshake, from the request sent.
    this.progress.requestSent = true
    const ms = this.tunnel.route.timeouts.headers
    if (ms === false) return
    this.#timer = setTimeout(() => {
      controller.abort(new GatewayError(GATEWAY_CODES.headersTimeout, `no answer to the handshake within ${ms} ms`))
    }, ms)
  }

  // undici calls these from its parser: what they throw goes to the tunnel, never further.

  onRequestUpgrade (_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, socket: Duplex): void {
    this.#clearTimer()
    if (this.#abandoned) {
      socket.destroy()
      return
    }
    this.status = statusCode
    this.progress.responseStarted = true
    this.#guard(() => { this.tunnel.onOpen(this, headers, socket as Socket) })
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    // An interim answer (100, 103): the final one follows.
    if (this.#abandoned || statusCode < 200) return
    this.#clearTimer()
    this.status = statusCode
    this.progress.responseStarted = true
    this.#guard(() => { if (!this.tunnel.onRefusal(this, statusCode, headers) && !this.#abandoned) controller.pause() })
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#abandoned) return
    this.#guard(() => { if (!this.tunnel.onRefusalData(chunk)) controller.pause() })
  }

  onResponseEnd (): void {
    this.release()
    if (!this.#abandoned) this.#guard(() => { this.tunnel.onRefusalEnd() })
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.release()
    if (!this.#abandoned) this.#guard(() => { this.tunnel.onTryError(this, err) })
  }

  #guard (step: () => void): void {
    try {
      step()
    } catch (err) {
      this.tunnel.failedOnItsOwn(this, err)
    }
  }

  #clearTimer (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }
}

/** One client's handshake and, once the upstream said 101, its tunnel. */
class Tunnel extends TrySequence<Handshake> {
  readonly #proxyName: string
  /** `Via` as this gateway adds it to the answers it passes on: its public name. */
  readonly #via: string
  readonly #headers: Record<string, string | string[] | undefined>
  /** The refusal's body, on its way to the client. */
  #body: PassThrough | null = null
  /** After the 101: the upstream's socket. */
  #upstream: Socket | null = null
  /** Bytes the client sent during the handshake, kept for the upstream. */
  readonly #early: Buffer[] = []

  constructor (
    request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly upgrade: Upgrade,
    readonly path: string,
    /**
     * Everything end to end, as the client sent it (Authorization, Origin, Cookie, every offered
     * subprotocol, Sec-WebSocket-Key/Version/Extensions), plus the forwarding headers, then the
     * route's rewriter (routes.ts). Connection and Upgrade are hop-by-hop: undici writes its own
     * `connection: upgrade` and `upgrade: websocket` for the `upgrade` option.
     */
    headers: Record<string, string | string[]>,
    readonly context: TunnelRoute,
    private readonly onEnd: () => void
  ) {
    super(request, context.route, context.pool, 'upgrade')
    this.#proxyName = context.config.errors.proxyName
    this.#via = `1.1 ${context.config.errors.proxyName}`
    this.#headers = headers
  }

  start (): void {
    const socket = this.upgrade.socket
    socket.once('close', this.#onClientClose)
    // Read while the upstream decides: a client that gives up sends its FIN ('end'), which an
    // unread socket would never show, and its try would hold a slot until timeouts.headers.
    // A WebSocket client sends nothing before the 101; anything it does send is kept.
    socket.on('data', this.#onEarlyData)
    socket.once('end', this.#onClientClose)
    if (this.plan()) this.tryNext()
  }

  /** One try of the handshake on `target`, with headers of its own. */
  protected sendTo (target: Target): void {
    const handshake = new Handshake(this, target)
    this.current = handshake
    const headers: Record<string, unknown> = Object.assign({}, this.#headers, { host: this.hostFor(target) })
    this.applyCredentials(headers)
    // An upgraded socket leaves the target's pool, so open tunnels never hold its connections.
    sendTry(handshake, handshake, this.route.timeouts, {
      path: this.path,
      method: 'GET',
      headers: headers as Record<string, string>,
      upgrade: 'websocket'
    }, (err) => { this.onTryError(handshake, err) })
  }

  /** A handshake has no body: it can always be sent again, under GET's rules. */
  protected replay (): Replay {
    return HANDSHAKE_REPLAY
  }

  onTryError (handshake: Handshake, err: unknown): void {
    const broken = this.#body !== null
    if (this.settled && !broken) return
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
    this.failedTry(handshake, verdict)
  }

  /**
   * Handling undici's news of a try threw (a bug, or Node refusing what was written): the
   * handshake ends as the gateway's failure, answered if nothing went out yet, else cut.
   */
  failedOnItsOwn (handshake: Handshake, err: unknown): void {
    handshake.abandon()
    const why = `Handling the target's answer to the handshake failed: ${err instanceof Error ? err.message : String(err)}`
    try {
      if (!this.settled && !this.reply.raw.headersSent) {
        this.failWith('proxy_internal_error', { phase: 'headers', cause: GATEWAY_CODES.relayFailed, why })
        return
      }
      logFailure(this.request, this.#failure('proxy_internal_error', { phase: 'headers', cause: GATEWAY_CODES.relayFailed, why }), true)
    } catch {}
    this.#settle()
    this.upgrade.socket.destroy()
  }

  /** The upstream answered the handshake with something else than 101: the client gets it as sent. */
  onRefusal (handshake: Handshake, status: number, upstream: IncomingHttpHeaders): boolean {
    this.pool.recordResponse(handshake.target, status, handshake.ms)
    this.attempts.push(handshake.record(null, null, 'headers'))
    if (status === 401 && this.replayUnauthorized()) {
      // The upstream refused the gateway's token: the handshake goes again with a new one, as
      // an HTTP request would (a handshake has no body to keep). Not a retry: the budget and
      // retry.retries are untouched.
      handshake.abandon()
      this.tryAfter(0, 'send')
      return false
    }
    if (shouldRetryStatus(status, 'GET', this.route.retry, this.retries, true) && this.hasAnotherTry() && this.pool.budget.tryRetry()) {
      handshake.abandon()
      this.retryLater()
      return false
    }
    const headers = forwardResponseHeaders(upstream, this.#via)
    if (this.context.config.errors.intercept.has(status)) {
      // As for any response (errors.intercept): the status stays, the body is the gateway's.
      handshake.abandon()
      this.failWith('upstream_error_status', { phase: 'headers', status, receivedStatus: status, retryAfter: retryAfterOf(headers['retry-after']) })
      return false
    }
    this.#settle()
    this.#count('refused')
    const full = isFullExposure(this.context.config.errors, this.request)
    // A refusal that redirects (to a login page) points through the gateway, as any answer.
    rewriteLocations(headers, this.request, this.route, this.pool)
    headers['proxy-status'] = appendList(headers['proxy-status'] as string | undefined, proxyStatusMember(null, this.#proxyName, full, status))
    const body = new PassThrough()
    body.on('drain', () => { handshake.resume() })
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
  onOpen (handshake: Handshake, answer: IncomingHttpHeaders, upstream: Socket): void {
    const client = this.upgrade.socket
    if (this.settled || client.destroyed) {
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
    client.write(this.#switchingHead(answer))
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
      this.request.log.info({ method: this.request.method, url: this.request.url, pool: this.pool.name, target: this.target?.hostPort ?? null, ms: Math.round(this.ms) },
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
  #switchingHead (answer: IncomingHttpHeaders): string {
    const full = isFullExposure(this.context.config.errors, this.request)
    const headers: Record<string, unknown> = { ...this.reply.getHeaders(), ...forwardResponseHeaders(answer, this.#via) }
    headers.connection = 'Upgrade'
    // The protocol the upstream's 101 switched to (its Upgrade field, a hop-by-hop one).
    headers.upgrade = answer.upgrade ?? 'websocket'
    headers['proxy-status'] = appendList(headers['proxy-status'] as string | undefined, proxyStatusMember(null, this.#proxyName, full, 101))
    const cookies = this.routingCookies(true)
    if (cookies !== null) headers['set-cookie'] = withCookies(headers['set-cookie'] as string | string[] | undefined, cookies)
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
    if (this.settled) return
    this.#settle()
    this.current?.abandon()
    this.request.log.info({ method: this.request.method, url: this.request.url, pool: this.pool.name, ms: Math.round(this.ms) },
      'websocket handshake cut: the gateway is closing')
    this.upgrade.socket.destroy()
  }

  readonly #onEarlyData = (chunk: Buffer): void => {
    this.#early.push(chunk)
  }

  readonly #onClientClose = (): void => {
    if (this.settled) return
    const progress = this.current?.progress
    this.#aborted(progress === undefined ? this.waitingPhase : progress.requestSent ? 'headers' : progress.connected ? 'send' : 'connect')
  }

  #aborted (phase: string): void {
    this.#settle()
    this.current?.abandon()
    this.upgrade.socket.destroy()
    this.context.recorder?.aborted(this.pool.name, this.target?.hostPort ?? null)
    logClientAborted(this.request, phase, this.pool.name, this.target?.hostPort ?? null, this.ms)
  }

  #count (event: TunnelEvent): void {
    this.context.recorder?.tunnel(this.pool.name, this.target?.hostPort ?? null, event)
  }

  protected failWith (error: ProxyErrorType, context: FailureDetails): void {
    this.#settle()
    this.#count('failed')
    this.context.answer(this.request, this.reply, this.#failure(error, context))
  }

  #failure (error: ProxyErrorType, context: Omit<FailureContext, 'ms'>): Failure {
    return makeFailure(error, Object.assign({
      pool: this.pool.name,
      target: this.target?.hostPort ?? null,
      attempts: this.attempts,
      queueMs: this.queueMs,
      ms: this.ms,
      timeouts: this.route.timeouts,
      healthPath: this.pool.config.health?.path ?? null
    }, context))
  }

  /** The handshake is over: answered, abandoned, or (`open`) a tunnel that ends on its own. */
  #settle (open = false): void {
    if (this.settled) return
    this.settled = true
    const socket = this.upgrade.socket
    socket.pause()
    socket.off('data', this.#onEarlyData)
    socket.off('end', this.#onClientClose)
    socket.off('close', this.#onClientClose)
    this.stopWaiting()
    if (!open) this.onEnd()
  }
}

const HANDSHAKE_REPLAY: Replay = Object.freeze({ method: 'GET', replayable: true, why: '' })
