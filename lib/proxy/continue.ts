// `Expect: 100-continue` is answered on this hop (undici cannot pass it on). Node's server
// says `100 Continue` before any route runs, so a body the route will refuse would be invited
// first and refused after. For routes with a bodyLimit, the gateway decides instead: a
// declared Content-Length over the limit gets no 100 Continue, only the route's 413.
import type { FastifyInstance } from 'fastify'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RouteConfig } from '../options/config.js'

export interface Limit { prefix: string, bodyLimit: number }

/** Takes over Node's `checkContinue` when some route limits its bodies; otherwise does nothing. */
export function answerExpectContinue (app: FastifyInstance, routes: readonly RouteConfig[]): void {
  const added = bodyLimits(routes)
  if (added.length === 0) return
  const server = app.server
  // One listener per server, whatever the number of registrations of the plugin: two would
  // hand the same request to Fastify twice.
  const earlier = limitsByServer.get(server)
  if (earlier !== undefined) {
    earlier.push(...added)
    earlier.sort((a, b) => b.prefix.length - a.prefix.length)
    return
  }
  const limits = [...added]
  limitsByServer.set(server, limits)
  const onCheckContinue = (req: IncomingMessage, res: ServerResponse): void => {
    if (!overLimit(req, limits)) res.writeContinue()
    // Node hands such requests to this listener instead of 'request': pass it on to Fastify.
    server.emit('request', req, res)
  }
  server.on('checkContinue', onCheckContinue)
  app.addHook('onClose', async function stopAnsweringExpectContinue () {
    server.off('checkContinue', onCheckContinue)
    limitsByServer.delete(server)
  })
}

const limitsByServer = new WeakMap<object, Limit[]>()

/** The routes' body limits, longest prefix first: the route Fastify would pick is the most specific one. */
export function bodyLimits (routes: readonly Pick<RouteConfig, 'prefix' | 'bodyLimit'>[]): Limit[] {
  return routes
    .filter((route) => route.bodyLimit !== null)
    .map((route) => ({ prefix: route.prefix, bodyLimit: route.bodyLimit! }))
    .sort((a, b) => b.prefix.length - a.prefix.length)
}

/** Whether a request declares a body over its route's limit (then it gets no 100 Continue). */
export function overLimit (req: Pick<IncomingMessage, 'url' | 'headers'>, limits: readonly Limit[]): boolean {
  const declared = Number(req.headers['content-length'])
  if (!Number.isFinite(declared)) return false
  const path = (req.url ?? '/').split('?')[0]!
  const route = limits.find((limit) => underPrefix(path, limit.prefix))
  return route !== undefined && declared > route.bodyLimit
}

function underPrefix (path: string, prefix: string): boolean {
  if (prefix.endsWith('/')) return path.startsWith(prefix) || path === prefix.slice(0, -1)
  return path === prefix || path.startsWith(`${prefix}/`)
}
