// The cookies the gateway reads and sets for its own routing (split, sticky): read with the
// `cookie` package, set with the attributes every one of them shares.
import type { FastifyRequest } from 'fastify'
import { parseCookie, stringifySetCookie } from 'cookie'

/** The value of the client's cookie `name`, if it sent one. */
export function cookieOf (request: FastifyRequest, name: string): string | undefined {
  const header = request.headers.cookie
  return header === undefined ? undefined : parseCookie(header)[name]
}

/**
 * A Set-Cookie value for the gateway's own cookie: for the whole site (`Path=/`), out of
 * scripts' reach (`HttpOnly`), sent on top-level navigation from other sites but not on their
 * subrequests (`SameSite=Lax`), and `Secure` when the client came over TLS (as Fastify sees
 * it, `trustProxy` included). `maxAge` in seconds; none: a session cookie.
 */
export function gatewayCookie (request: FastifyRequest, name: string, value: string, maxAge: number | null): string {
  return stringifySetCookie({
    name,
    value,
    path: '/',
    httpOnly: true,
    sameSite: 'lax',
    secure: request.protocol === 'https',
    ...(maxAge !== null ? { maxAge } : {})
  })
}

/** Adds cookies to an answer's Set-Cookie field, after the upstream's own. */
export function withCookies (field: string | string[] | undefined, cookies: readonly string[]): string[] {
  if (field === undefined) return [...cookies]
  return [...(Array.isArray(field) ? field : [field]), ...cookies]
}
