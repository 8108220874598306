// The cache key: which stored answers a request may be given. Parts are joined with a line
// feed, which no path, query, host or pool name can hold, in the order purge() narrows them:
// route, path, query, then pool, host and method.
import type { IncomingHttpHeaders } from 'node:http'
import { varyNames } from './policy.js'

const SEP = '\n'

/**
 * The pool whose answer the key stands for. Today a route has one pool; when routing chooses a
 * pool per request (match, split), this is the one place that takes the chosen pool instead:
 * two pools' answers for one path are different answers.
 */
export function keyPool (routePool: string): string {
  return routePool
}

/** `url`: the request-target as the client sent it (path and query). */
export function cacheKey (route: string, url: string, pool: string, host: string | undefined, method: string): string {
  const q = url.indexOf('?')
  const path = q === -1 ? url : url.slice(0, q)
  const query = q === -1 ? '' : url.slice(q)
  return [route, path, query, pool, (host ?? '').toLowerCase(), method].join(SEP)
}

/**
 * What purge(route, path?) drops: everything under the route, or one path with every query
 * string (a path given without one), or one path and query.
 */
export function purgePrefix (route: string, path?: string): string {
  if (path === undefined) return route + SEP
  const q = path.indexOf('?')
  return q === -1 ? [route, path, ''].join(SEP) : [route, path.slice(0, q), path.slice(q), ''].join(SEP)
}

function normalized (value: string | string[] | undefined): string {
  if (value === undefined) return ''
  return (Array.isArray(value) ? value.join(', ') : value).replace(/\s+/g, ' ').trim()
}

/**
 * Which variant of a key an answer is: the values the request gave for the fields the answer's
 * Vary names (RFC 9111 §4.1). A later request is given that answer only with the same values.
 */
export function variantOf (vary: string | string[] | undefined, request: IncomingHttpHeaders): string {
  const names = varyNames(vary)
  if (names.length === 0) return ''
  return names.sort().map((name) => `${name}:${normalized(request[name])}`).join(SEP)
}
