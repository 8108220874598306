// The request body on its way through, watched by timeouts.body (the longest silence of a body):
// a client that stops sending mid-way is caught (as nginx's client_body_timeout), and so is an
// upstream that stops taking the body (as nginx's proxy_send_timeout). With timeouts.total off
// by default, neither can then hold a request and an upstream connection for ever.
import type { IncomingMessage } from 'node:http'

export interface UploadWatch { stop: () => void }

export interface UploadEvents {
  /** The client has sent no body byte for `ms` and the gateway had nothing left to pass on. */
  clientStalled: () => void
  /** Body bytes have waited `ms` for the upstream to take them, with no progress at all. */
  upstreamStalled: () => void
  /** Whether a try is connected and so could be taking the body (not queued or connecting). */
  sending: () => boolean
}

export function watchUpload (raw: IncomingMessage, ms: number, events: UploadEvents): UploadWatch {
  const socket = raw.socket
  let received = socket.bytesRead
  let buffered = raw.readableLength
  const timer = setTimeout(() => {
    // Every byte handed on: what follows is the response's business (timeouts.headers).
    if (raw.readableEnded || raw.destroyed) return
    const nowReceived = socket.bytesRead
    const nowBuffered = raw.readableLength
    const moved = nowReceived !== received || nowBuffered !== buffered
    received = nowReceived
    buffered = nowBuffered
    if (moved) {
      timer.refresh()
    } else if (nowBuffered === 0 && !raw.complete) {
      events.clientStalled()
    } else if (events.sending()) {
      events.upstreamStalled()
    } else {
      // Waiting in line or connecting: the body is held back on purpose.
      timer.refresh()
    }
  }, ms)
  return { stop: () => { clearTimeout(timer) } }
}
