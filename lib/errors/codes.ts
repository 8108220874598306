// The errors the gateway itself throws, each with a code a caller can test for.
// (The codes that failed exchanges carry are GATEWAY_CODES in classify.ts; option errors are
// OptionsError in options/check.ts, which names the option's path.)

/** An error the gateway made, with its code, read by the classifier like any other. */
export class GatewayError extends Error {
  constructor (readonly code: string, message: string, options?: ErrorOptions) { super(message, options) }
}

/** Codes of the errors `app.upstream` throws for names that are not configured. */
export const API_CODES = {
  unknownPool: 'FST_UPSTREAM_UNKNOWN_POOL',
  unknownTarget: 'FST_UPSTREAM_UNKNOWN_TARGET'
} as const

/** `app.upstream.*` was given a pool name that is not configured. */
export function unknownPool (name: string, pools: readonly string[]): GatewayError {
  return new GatewayError(API_CODES.unknownPool, `fastify-upstream: no pool named "${name}" (pools: ${pools.join(', ')})`)
}

/** A pool was asked for a target it does not have. */
export function unknownTarget (pool: string, url: string, targets: readonly string[]): GatewayError {
  return new GatewayError(API_CODES.unknownTarget, `fastify-upstream: pool "${pool}" has no target "${url}" (targets: ${targets.join(', ')})`)
}

/** Whether `err` says a pool or target name is not configured (the caller's mistake). */
export function isUnknownName (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === API_CODES.unknownPool || code === API_CODES.unknownTarget
}
