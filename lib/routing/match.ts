// routes[].match: the first rule whose every condition fits the request sends it to its pool.
// Pure decisions on the request's headers, cookies and query, tested without a socket.
import type { FastifyRequest } from 'fastify'
import { parseCookie } from 'cookie'
import type { MatchCondition, MatchRuleConfig } from '../options/config.js'

/** The pool of the first rule that fits; null when none does. */
export function matchPool (rules: readonly MatchRuleConfig[], request: FastifyRequest): string | null {
  let cookies: Record<string, string | undefined> | null = null
  for (const rule of rules) {
    if (!rule.header.every((c) => fits(c, request.headers[c.name]))) continue
    if (rule.cookie.length > 0) {
      cookies ??= request.headers.cookie === undefined ? {} : parseCookie(request.headers.cookie)
      const jar = cookies
      if (!rule.cookie.every((c) => fits(c, jar[c.name]))) continue
    }
    if (rule.query.length > 0) {
      const query = (request.query ?? {}) as Record<string, unknown>
      if (!rule.query.every((c) => fits(c, query[c.name]))) continue
    }
    return rule.pool
  }
  return null
}

/** A value fits when it equals the string or matches the RegExp; a repeated one, when one of its values does. */
function fits (condition: MatchCondition, value: unknown): boolean {
  if (Array.isArray(value)) return value.some((one) => fits(condition, one))
  if (typeof value !== 'string') return false
  const expected = condition.value
  return typeof expected === 'string' ? value === expected : expected.test(value)
}
