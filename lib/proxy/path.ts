// The path a request goes upstream with: the route's prefix swapped for its rewritePrefix, the
// rest of the path and the query passed on byte for byte, as the client sent them. A path that
// could climb out of rewritePrefix at the upstream is refused (400) before anything is sent.
import { UnsafePathError } from '../errors/codes.js'

/** How the app's router matches paths (Fastify's routerOptions), for prefixes sent encoded. */
export interface RouterMatching {
  caseSensitive: boolean
  ignoreDuplicateSlashes: boolean
}

/**
 * Maps one route's paths: `prefix` (what the client uses) to `rewritePrefix` (what the upstream
 * sees). Made once per route; `map` runs per request and, for the usual path (sent as the
 * route's prefix spells it, no dot segments, no escapes), does two string checks and a slice.
 */
export class PathMapper {
  readonly #prefix: string
  readonly #rewritePrefix: string

  constructor (prefix: string, rewritePrefix: string, private readonly matching: RouterMatching) {
    // Both without a trailing slash: the slash after the prefix is part of the rest, so
    // '/api/' → '/v2/' and '/api' → '/v2' map '/api/x' alike, to '/v2/x'.
    this.#prefix = withoutTrailingSlash(prefix)
    this.#rewritePrefix = withoutTrailingSlash(rewritePrefix)
  }

  /** The upstream request-target for the client's raw `url`; throws UnsafePathError. */
  map (url: string): string {
    const rest = url.slice(this.#restStart(url))
    const mapped = this.#rewritePrefix + rest
    const path = mapped === '' || mapped.charCodeAt(0) === 63 /* ? */ ? `/${mapped}` : mapped
    checkPath(path)
    return path
  }

  /** Where the part after the prefix begins in the raw url. */
  #restStart (url: string): number {
    const prefix = this.#prefix
    if (url.startsWith(prefix)) {
      const next = url.charCodeAt(prefix.length)
      // Whole segments only: the router matched '/api' or '/api/*', never '/apix'.
      if (Number.isNaN(next) || next === 47 /* / */ || next === 63 /* ? */) return prefix.length
    }
    // The client spelled the prefix another way the router accepts: escaped (%61pi), in other
    // case, or with doubled slashes. Rare; found by decoding the url up to each '/'.
    return encodedPrefixEnd(url, prefix, this.matching)
  }
}

function withoutTrailingSlash (path: string): string {
  return path.endsWith('/') ? path.slice(0, -1) : path
}

/**
 * The end of `prefix` in a url that spells it differently. The router has matched the request
 * to the route, so some '/' (or '?', or the end) ends a stretch that decodes to the prefix.
 */
function encodedPrefixEnd (url: string, prefix: string, matching: RouterMatching): number {
  const wanted = normalise(prefix, matching)
  for (let end = 1; end <= url.length; end++) {
    const c = url.charCodeAt(end)
    if (end < url.length && c !== 47 && c !== 63) continue
    let decoded: string
    try {
      decoded = decodeURIComponent(url.slice(0, end))
    } catch {
      break
    }
    if (normalise(decoded, matching) === wanted) return end
    if (c === 63) break
  }
  throw new UnsafePathError(`the path does not start with the route's prefix "${prefix}" in a form the gateway can map`)
}

function normalise (path: string, matching: RouterMatching): string {
  const collapsed = matching.ignoreDuplicateSlashes ? path.replace(/\/{2,}/g, '/') : path
  return matching.caseSensitive ? collapsed : collapsed.toLowerCase()
}

/**
 * Refuses a path an upstream could resolve outside the rewritten prefix: a `..` segment, sent
 * plainly or escaped (`%2e%2e`, `..%2f`), with `\` for `/`, or as Tomcat's `..;`; an escape
 * that does not decode (overlong UTF-8 such as `%c0%ae`); and a path that starts with `//`
 * (read by some servers as a host). Nothing is rewritten: a path passes as sent, or not at all.
 */
export function checkPath (target: string): void {
  const q = target.indexOf('?')
  const path = q === -1 ? target : target.slice(0, q)
  if (path.charCodeAt(1) === 47 /* // */) throw new UnsafePathError('the path starts with "//"')
  // The usual path has no dot segment, escape or backslash: nothing more to look at.
  if (!path.includes('..') && !path.includes('%') && !path.includes('\\')) return
  let decoded: string
  try {
    decoded = decodeURIComponent(path)
  } catch {
    throw new UnsafePathError('the path has a percent-escape that does not decode')
  }
  const slashed = decoded.replaceAll('\\', '/')
  if (slashed.startsWith('//')) throw new UnsafePathError('the path starts with "//" once decoded')
  for (const segment of slashed.split('/')) {
    const semicolon = segment.indexOf(';')
    if ((semicolon === -1 ? segment : segment.slice(0, semicolon)) === '..') {
      throw new UnsafePathError('the path has a ".." segment, which could climb out of the route\'s rewritePrefix upstream')
    }
  }
}
