// A gRPC call's deadline, as its client sends it: `grpc-timeout: <digits><unit>` (at most 8
// digits; H, M, S for hours, minutes, seconds; m, u, n for milli-, micro-, nanoseconds). The
// gateway stops waiting when it passes and tells the target what is left of it.
const UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }

/** The deadline in ms, or null for a missing or malformed value (the call then has none). */
export function parseGrpcTimeout (value: string | string[] | undefined): number | null {
  if (typeof value !== 'string') return null
  const match = /^(\d{1,8})([HMSmun])$/.exec(value.trim())
  if (match === null) return null
  return Number(match[1]) * UNIT_MS[match[2]!]!
}

/** What is left of a deadline, as `grpc-timeout` (milliseconds, at least 1: 0 would mean none left to a server). */
export function formatGrpcTimeout (ms: number): string {
  return `${Math.max(1, Math.min(99_999_999, Math.floor(ms)))}m`
}
