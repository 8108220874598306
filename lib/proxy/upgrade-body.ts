// A request with an Upgrade the gateway does not take (`Upgrade: h2c` from `curl --http2`, or
// a websocket handshake outside a websocket route) goes on as plain HTTP with Upgrade removed.
// Node's parser lets go of the connection at such a request's headers, though, once the server
// has an 'upgrade' listener (websocket routes add one): its body is still on the socket, and
// the request stream Node gives is empty. The body is read from the socket here, by its
// Content-Length. A chunked body would need a parser of its own; a request with one is refused
// with 411 Length Required (RFC 9110 §15.5.12) rather than forwarded without its body.
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'

const kBody = Symbol('fastify-upstream.upgrade-body')
type WithBody = IncomingMessage & { [kBody]?: Readable | 'length-required' }

/** Keeps the body of an upgrade request that goes on as plain HTTP: `head` and what follows. */
export function keepBodyAfterUpgrade (req: IncomingMessage, socket: Socket, head: Buffer): void {
  const { 'content-length': length, 'transfer-encoding': coding } = req.headers
  if (coding !== undefined) {
    ;(req as WithBody)[kBody] = 'length-required'
    return
  }
  const size = length === undefined ? 0 : Number(length)
  if (size > 0) (req as WithBody)[kBody] = new UpgradeBody(socket, head, size)
}

/** The body kept for this request, 'length-required' when it could not be, or undefined. */
export function bodyAfterUpgrade (req: IncomingMessage): Readable | 'length-required' | undefined {
  return (req as WithBody)[kBody]
}

/** Exactly `size` bytes: those Node had read past the headers, then the socket's. */
class UpgradeBody extends Readable {
  #left: number

  constructor (private readonly socket: Socket, head: Buffer, size: number) {
    super()
    this.#left = size
    this.#take(head)
    if (this.#left === 0) return
    socket.on('data', this.#onData)
    socket.once('end', this.#onCut)
    socket.once('close', this.#onCut)
  }

  readonly #onData = (chunk: Buffer): void => {
    if (!this.#take(chunk)) this.socket.pause()
  }

  readonly #onCut = (): void => {
    if (this.#left > 0) this.destroy(Object.assign(new Error('the client closed the connection before its body ended'), { code: 'ECONNRESET' }))
  }

  /** Passes on what belongs to the body; false when the reader wants no more for now. */
  #take (chunk: Buffer): boolean {
    if (this.#left === 0 || chunk.length === 0) return true
    const part = chunk.length > this.#left ? chunk.subarray(0, this.#left) : chunk
    this.#left -= part.length
    const more = this.push(part)
    if (this.#left === 0) {
      this.push(null)
      this.#stop()
    }
    return more
  }

  #stop (): void {
    this.socket.off('data', this.#onData)
    this.socket.off('end', this.#onCut)
    this.socket.off('close', this.#onCut)
  }

  override _read (): void {
    if (this.#left > 0) this.socket.resume()
  }

  override _destroy (err: Error | null, callback: (err?: Error | null) => void): void {
    this.#stop()
    callback(err)
  }
}
