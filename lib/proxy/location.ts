// Redirects through the gateway (routes[].rewriteLocation), as nginx's `proxy_redirect default`:
// a Location or Content-Location that points at one of the pool's targets is rewritten to the
// address the client used, and its path from rewritePrefix back to the route's prefix; a
// path-absolute one gets the same path mapping. Anything else (another site, a path outside
// rewritePrefix, a relative path like `next` or `../up`) passes untouched.
import type { FastifyRequest } from 'fastify'
import type { RouteConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'

/**
 * Rewrites `Location` and `Content-Location` of an upstream answer in place, when the route
 * says so (routes[].rewriteLocation): for proxied responses and refused WebSocket handshakes.
 */
export function rewriteLocations (headers: Record<string, unknown>, request: FastifyRequest, route: RouteConfig, pool: UpstreamPool): void {
  if (!route.rewriteLocation) return
  const location = headers.location
  const contentLocation = headers['content-location']
  if (typeof location !== 'string' && typeof contentLocation !== 'string') return
  const host = request.host
  const context: LocationContext = {
    origins: pool.origins,
    prefix: route.prefix,
    rewritePrefix: route.rewritePrefix,
    clientOrigin: host !== '' ? `${request.protocol}://${host}` : null
  }
  if (typeof location === 'string') headers.location = rewriteLocation(location, context)
  if (typeof contentLocation === 'string') headers['content-location'] = rewriteLocation(contentLocation, context)
}

export interface LocationContext {
  /** The pool's target origins, e.g. `http://10.0.0.7:3001`. */
  origins: ReadonlySet<string>
  prefix: string
  rewritePrefix: string
  /** `proto://host` as the client addressed the gateway; null when the client sent no Host. */
  clientOrigin: string | null
}

export function rewriteLocation (value: string, context: LocationContext): string {
  if (value.startsWith('/') && !value.startsWith('//')) return mapPath(value, context) ?? value
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return value
  }
  if (!context.origins.has(url.origin)) return value
  const path = mapPath(`${url.pathname}${url.search}${url.hash}`, context)
  if (path === null) return value
  // Without a Host from the client there is no address to give: a path-absolute reference is
  // still a valid Location (RFC 9110 §10.2.2).
  return context.clientOrigin === null ? path : `${context.clientOrigin}${path}`
}

/** The client-side path for an upstream path, or null when it is not under rewritePrefix. */
function mapPath (path: string, { prefix, rewritePrefix }: LocationContext): string | null {
  const base = rewritePrefix.endsWith('/') ? rewritePrefix.slice(0, -1) : rewritePrefix
  if (base !== '' && path !== base && !path.startsWith(`${base}/`) && !path.startsWith(`${base}?`) && !path.startsWith(`${base}#`)) return null
  const rest = path.slice(base.length)
  const front = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  const mapped = `${front}${rest}`
  return mapped === '' || mapped.startsWith('?') || mapped.startsWith('#') ? `/${mapped}` : mapped
}
