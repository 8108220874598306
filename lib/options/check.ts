// Small checkers that either return a well-typed value or throw an `OptionsError` naming the
// option's path, what was expected and what was given. `validate.ts` is written with these.

import { OptionsError } from '../errors/codes.js'

export { OptionsError }

export function describe (value: unknown): string {
  if (value === undefined) return 'undefined'
  if (value === null) return 'null'
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  if (value instanceof RegExp) return String(value)
  if (typeof value === 'object') return 'an object'
  return String(value)
}

export function fail (path: string, expected: string, got: unknown): never {
  throw new OptionsError(path, `expected ${expected}, got ${describe(got)}`)
}

export function isPlainObject (value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/** A plain object whose keys are all in `allowed`; a typo is an error that suggests the near key. */
export function object (path: string, value: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (!isPlainObject(value)) fail(path, 'an object', value)
  for (const key of Object.keys(value)) {
    if (allowed.includes(key)) continue
    const near = allowed.find((name) => editDistance(name.toLowerCase(), key.toLowerCase()) <= 2)
    const hint = near !== undefined ? ` (did you mean "${near}"?)` : ` (known options: ${allowed.join(', ')})`
    throw new OptionsError(join(path, key), `unknown option${hint}`)
  }
  return value
}

export function optionalObject (path: string, value: unknown, allowed: readonly string[]): Record<string, unknown> {
  return value === undefined ? {} : object(path, value, allowed)
}

export function join (path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`
  if (/^[A-Za-z_$][\w$]*$/.test(key)) return path === '' ? key : `${path}.${key}`
  return `${path}[${JSON.stringify(key)}]`
}

export function integer (path: string, value: unknown, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`
    fail(path, `an integer ${range}`, value)
  }
  return value
}

/**
 * The longest timer Node keeps: a longer one fires at once (with a TimeoutOverflowWarning), so
 * a larger duration would turn a generous timeout into an instant one.
 */
export const MAX_DURATION = 2 ** 31 - 1

/** Milliseconds; `Infinity` is not a duration (use the option's own way to turn it off). */
export function duration (path: string, value: unknown, fallback: number, min = 1, expected = `a duration in milliseconds >= ${min}`): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) fail(path, expected, value)
  if (value > MAX_DURATION) fail(path, `a duration in milliseconds <= ${MAX_DURATION} (Node's longest timer; use false to turn a timeout off)`, value)
  return value
}

/** A duration, or `false` for none (a timeout turned off). */
export function durationOrOff (path: string, value: unknown, fallback: number | false): number | false {
  if (value === false) return false
  return duration(path, value, fallback as number, 1, 'a duration in milliseconds >= 1, or false for none')
}

export function ratio (path: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) fail(path, 'a number from 0 to 1', value)
  return value
}

export function boolean (path: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') fail(path, 'true or false', value)
  return value
}

export function string (path: string, value: unknown, fallback?: string): string {
  if (value === undefined && fallback !== undefined) return fallback
  if (typeof value !== 'string' || value === '') fail(path, 'a non-empty string', value)
  return value
}

export function oneOf<T extends string> (path: string, value: unknown, choices: readonly T[], fallback?: T): T {
  if (value === undefined && fallback !== undefined) return fallback
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    fail(path, `one of ${choices.map((c) => `"${c}"`).join(', ')}`, value)
  }
  return value as T
}

export function array (path: string, value: unknown, fallback?: unknown[]): unknown[] {
  if (value === undefined && fallback !== undefined) return fallback
  if (!Array.isArray(value)) fail(path, 'an array', value)
  return value
}

export function httpStatus (path: string, value: unknown): number {
  return integer(path, value, 0, 100, 599)
}

function editDistance (a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = current
    }
  }
  return row[b.length]!
}
