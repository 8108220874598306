// A request body that a retry can send again. Small bodies are read into memory before the
// first try (as nginx buffers request bodies); larger ones stream through untouched and are
// then not retried. A body without a declared length is counted against routes[].bodyLimit as
// it streams (one with a Content-Length is checked before: HTTP framing keeps it to that).
import { Readable } from 'node:stream'
import { BodyTooLarge } from '../errors/codes.js'

/** Bodies up to this size are kept for replay. */
export const REPLAY_LIMIT = 64 * 1024

export type Body = string | Buffer | Readable | null

export interface PreparedBody {
  body: Body
  replayable: boolean
  /** Why it is not replayable, in words for the log. */
  why: string
}

/** A body that needs no reading (none, or already in memory), at once; else null. */
export function bodyWithoutReading (body: unknown): PreparedBody | null {
  if (body === undefined || body === null || body === '') return NO_BODY
  if (typeof body === 'string' || Buffer.isBuffer(body)) return { body, replayable: true, why: '' }
  return null
}

const NO_BODY: PreparedBody = Object.freeze({ body: null, replayable: true, why: '' })

/**
 * A body ready to send (and maybe replay). `limit` (bytes, null for none) applies to a body
 * of unknown length: past it, reading rejects, or the stream handed on errors, with BodyTooLarge.
 */
export async function prepareBody (body: unknown, contentLength: string | undefined, limit: number | null): Promise<PreparedBody> {
  const ready = bodyWithoutReading(body)
  if (ready !== null) return ready
  if (!(body instanceof Readable)) return { body: body as Body, replayable: false, why: 'an unknown kind of body' }
  const declared = contentLength === undefined ? null : Number(contentLength)
  const count = (size: number): void => {
    if (declared === null && limit !== null && size > limit) throw new BodyTooLarge(limit)
  }
  if (declared !== null && declared > REPLAY_LIMIT) {
    return { body, replayable: false, why: `a streamed body of ${declared} bytes, over the ${REPLAY_LIMIT}-byte replay limit` }
  }
  // Read up to the limit; a body that turns out larger streams on with what was read in front.
  const chunks: Buffer[] = []
  let size = 0
  const iterator = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  while (size <= REPLAY_LIMIT) {
    const next = await iterator.next()
    if (next.done === true) return { body: Buffer.concat(chunks, size), replayable: true, why: '' }
    chunks.push(next.value)
    size += next.value.length
    count(size)
  }
  const rest = Readable.from((async function * () {
    yield * chunks
    while (true) {
      const next = await iterator.next()
      if (next.done === true) return
      size += next.value.length
      count(size)
      yield next.value
    }
  })(), { objectMode: false })
  return { body: rest, replayable: false, why: `a streamed body of more than ${REPLAY_LIMIT} bytes, the replay limit` }
}
