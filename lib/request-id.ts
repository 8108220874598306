// Accepting a caller's request id without trusting it. Fastify's `requestIdHeader` takes the
// header as it comes (16 KiB of it, quotes and all) and it then names every log line, goes
// upstream and comes back. `requestIdFrom` is a `genReqId` that accepts only an id that looks
// like one and generates a fresh id otherwise; the plugin logs each replacement.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

/** Left on the raw request when a caller's id was refused: the plugin logs it once. */
export const kReplacedRequestId = Symbol('fastify-upstream.replacedRequestId')

export interface ReplacedRequestId {
  header: string
  /** Why the caller's id was refused, in words for the log (never the id itself: it may be huge). */
  reason: string
  length: number
}

export interface RequestIdOptions {
  /** The longest id accepted [128]. */
  maxLength?: number
  /** Makes an id when none is accepted [crypto.randomUUID]. */
  generate?: (req: IncomingMessage) => string
}

/** UUIDs, ULIDs, `req-1`, base64 and trace ids such as AWS's `Root=1-…;Parent=…`: no spaces, quotes, angle brackets or control characters. */
const ID = /^[\w.~:;,=+/@-]+$/

/**
 * A `genReqId` for Fastify: `Fastify({ genReqId: requestIdFrom('x-request-id') })` (leave
 * Fastify's `requestIdHeader` unset: when set, Fastify takes the header before genReqId runs).
 */
export function requestIdFrom (header = 'x-request-id', options: RequestIdOptions = {}): (req: IncomingMessage) => string {
  const name = header.toLowerCase()
  const maxLength = options.maxLength ?? 128
  const generate = options.generate ?? (() => randomUUID())
  return (req) => {
    const sent = req.headers[name]
    // Node joins repeated fields with ", ", which the pattern refuses: two ids are none.
    const value = Array.isArray(sent) ? sent.join(', ') : sent
    if (value === undefined || value === '') return generate(req)
    if (value.length <= maxLength && ID.test(value)) return value
    const replaced: ReplacedRequestId = {
      header: name,
      reason: value.length > maxLength ? `longer than ${maxLength} characters` : 'characters outside [A-Za-z0-9_.~:;,=+/@-]',
      length: value.length
    }
    ;(req as IncomingMessage & { [kReplacedRequestId]?: ReplacedRequestId })[kReplacedRequestId] = replaced
    return generate(req)
  }
}
