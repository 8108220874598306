// The undici dispatcher handed to @fastify/reply-from. reply-from builds the upstream request
// (path, method, headers, streamed body); this dispatcher decides where it goes, through the
// request's Exchange, so target choice and every later try stay in one place.
import { Dispatcher } from 'undici'
import { kExchange, type Exchange } from './exchange.js'

export class UpstreamDispatcher extends Dispatcher {
  // reply-from calls `request()`, which hands its callback-style handler to `dispatch`; the
  // exchange keeps that style end to end (see LegacyHandler in exchange.ts).
  override dispatch (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    // The exchange travels inside the headers object under a symbol: reply-from copies headers
    // with Object.assign (which keeps symbol keys) and undici ignores symbol keys.
    const headers = opts.headers as Record<string | symbol, unknown> | null | undefined
    const exchange = headers?.[kExchange] as Exchange | undefined
    if (exchange === undefined) {
      handler.onError?.(new Error('fastify-upstream: request reached the dispatcher without an exchange'))
      return false
    }
    // Cleared, not deleted: a delete would make the header object a slow dictionary.
    headers![kExchange] = undefined
    exchange.start(opts, handler)
    return true
  }

  // Targets own their connection pools; the gateway closes them (see pool.ts).
  override async close (): Promise<void> {}
  override async destroy (): Promise<void> {}
}
