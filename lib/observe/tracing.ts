// OpenTelemetry tracing, when the app has set it up: each try on a target is a span under the
// request's span, with the failure's type, blame and phase, and the upstream gets exactly one
// `traceparent`, continuing the client's trace.
//
// @opentelemetry/api is an optional peer dependency: it is looked up once, at registration, and
// when it is missing, or no tracer provider is registered, tracing is off and costs nothing per
// request (the exchange holds `null` and never touches a span or a context).
//
// The two-traceparent problem: the gateway forwards the client's `traceparent` like any header, and
// @opentelemetry/instrumentation-undici appends one of its own with `request.addHeader()` without
// looking for one already there, so the upstream would get two, which W3C parsers reject. The
// gateway replaces the client's fields with its try span's own (so the trace continues even
// without the undici instrumentation), and makes sure that whatever undici request to a target
// carries, at most one of each reaches the wire: a later `traceparent` (the undici span's, one
// level deeper) replaces the earlier one instead of joining it.
import { createRequire } from 'node:module'
import { subscribe } from 'node:diagnostics_channel'
import type { FastifyRequest } from 'fastify'
import type { AttemptRecord, Failure } from '../errors/failure.js'
import { TAXONOMY, type ProxyErrorType } from '../errors/taxonomy.js'

// The slice of @opentelemetry/api the gateway uses, written out so that the package builds and
// type-checks without it installed.
type Context = object
type AttributeValue = string | number | boolean
interface SpanContext { traceId: string, spanId: string }
export interface Span {
  setAttribute: (key: string, value: AttributeValue) => Span
  setStatus: (status: { code: number, message?: string }) => Span
  spanContext: () => SpanContext
  end: () => void
}
interface Tracer {
  startSpan: (name: string, options: { kind?: number, attributes?: Record<string, AttributeValue> }, context?: Context) => Span
}
interface OtelApi {
  trace: {
    getTracerProvider: () => object
    getTracer: (name: string, version?: string) => Tracer
    setSpan: (context: Context, span: Span) => Context
    getSpan: (context: Context) => Span | undefined
  }
  context: {
    active: () => Context
    with: <T>(context: Context, fn: () => T) => T
  }
  propagation: {
    inject: (context: Context, carrier: Record<string, string>) => void
  }
  ProxyTracerProvider: new () => { getDelegateTracer: (name: string) => unknown }
  SpanStatusCode: { ERROR: number }
  SpanKind: { INTERNAL: number }
}

/** `tracing` as the options give it. */
export type TracingMode = boolean | 'auto'

/** The span attributes' prefix. */
const NS = 'fastify_upstream'
/** The W3C Trace Context fields, which a request must carry at most once each. */
const TRACE_FIELDS = new Set(['traceparent', 'tracestate'])

/** @opentelemetry/api as the app has it, or null when it is not installed. */
function loadApi (): OtelApi | null {
  try {
    return createRequire(import.meta.url)('@opentelemetry/api') as OtelApi
  } catch {
    return null
  }
}

/**
 * A global tracer provider is registered: the API's proxy provider has a delegate. (A provider
 * that is not the proxy was put there by hand: taken as real.)
 */
function hasTracerProvider (api: OtelApi): boolean {
  const provider = api.trace.getTracerProvider()
  if (!(provider instanceof api.ProxyTracerProvider)) return true
  return provider.getDelegateTracer(NS) !== undefined
}

/**
 * What `tracing` resolves to at registration: a Tracing, or null for off. `true` without
 * @opentelemetry/api installed throws (the caller names the option).
 */
export function createTracing (mode: TracingMode, isTarget: (origin: string) => boolean): Tracing | null {
  if (mode === false) return null
  const api = loadApi()
  if (api === null) {
    if (mode === true) throw new Error('tracing is true but @opentelemetry/api is not installed (npm install @opentelemetry/api)')
    return null
  }
  if (mode === 'auto' && !hasTracerProvider(api)) return null
  return new Tracing(api, isTarget)
}

/** What a try span is told of a try that failed. */
export interface TryOutcome {
  error: ProxyErrorType | 'client_aborted'
  phase: AttemptRecord['phase']
  cause: string | null
  /** What went wrong, as the error said it. */
  err: unknown
}

export class Tracing {
  readonly #tracer: Tracer

  readonly #isTarget: (origin: string) => boolean

  constructor (private readonly api: OtelApi, isTarget: (origin: string) => boolean) {
    this.#tracer = api.trace.getTracer('fastify-upstream')
    this.#isTarget = isTarget
    guardTraceFields(isTarget)
  }

  /** The app closed: its targets' requests need no more guarding. */
  close (): void {
    targetGuards.delete(this.#isTarget)
  }

  /**
   * The context a request's tries hang from: @fastify/otel's request span when it made one (the
   * active context in the route handler is its short-lived handler span), else the active one.
   */
  requestContext (request: FastifyRequest): Context {
    const otel = (request as { opentelemetry?: () => { context?: Context | null } }).opentelemetry
    return (typeof otel === 'function' ? otel.call(request).context : null) ?? this.api.context.active()
  }

  /** Starts the span of try number `attempt` (1 for the first) on `target` of `pool`. */
  startTry (parent: Context, pool: string, target: string, attempt: number): Span {
    return this.#tracer.startSpan(`${NS} try`, {
      kind: this.api.SpanKind.INTERNAL,
      attributes: { [`${NS}.pool`]: pool, [`${NS}.target`]: target, [`${NS}.attempt`]: attempt }
    }, parent)
  }

  /**
   * Sends a try (`send`) inside its span's context, so the undici instrumentation's client span
   * is a child of it, with the request's trace fields set from that context in `headers` (the
   * client's are replaced). When no propagator writes any, the client's stay as they came.
   */
  sendWithin (parent: Context, span: Span, headers: Record<string, string>, send: () => void): void {
    const context = this.api.trace.setSpan(parent, span)
    const fields: Record<string, string> = {}
    this.api.propagation.inject(context, fields)
    if (fields.traceparent !== undefined) {
      headers.traceparent = fields.traceparent
      // undefined, not deleted: undici skips it, and the object keeps its shape.
      ;(headers as Record<string, string | undefined>).tracestate = fields.tracestate
    }
    this.api.context.with(context, send)
  }

  /**
   * The request ended in a failure the gateway answers: its span (the parent of the tries) says
   * which, where and whose fault, as the failure's log line does.
   */
  requestFailed (parent: Context, failure: Failure): void {
    const span = this.api.trace.getSpan(parent)
    if (span === undefined) return
    span.setAttribute(`${NS}.error`, failure.error)
    span.setAttribute(`${NS}.blame`, failure.blame)
    span.setAttribute(`${NS}.phase`, failure.phase)
    if (failure.pool !== null) span.setAttribute(`${NS}.pool`, failure.pool)
    if (failure.target !== null) span.setAttribute(`${NS}.target`, failure.target)
    span.setAttribute(`${NS}.attempts`, failure.attempts.length)
  }

  /** Ends a try that got an answer with `status`. */
  answered (span: Span, status: number): void {
    span.setAttribute('http.response.status_code', status)
    if (status >= 500) span.setStatus({ code: this.api.SpanStatusCode.ERROR, message: `status ${status}` })
    span.end()
  }

  /** Ends a try that failed, with the failure's type, blame and phase. */
  failed (span: Span, outcome: TryOutcome): void {
    span.setAttribute(`${NS}.error`, outcome.error)
    span.setAttribute(`${NS}.blame`, outcome.error === 'client_aborted' ? 'client' : TAXONOMY[outcome.error].blame)
    span.setAttribute(`${NS}.phase`, outcome.phase)
    if (outcome.cause !== null) span.setAttribute(`${NS}.cause`, outcome.cause)
    const message = outcome.err instanceof Error ? outcome.err.message : String(outcome.err)
    span.setStatus({ code: this.api.SpanStatusCode.ERROR, message })
    span.end()
  }
}

// ---------------------------------------------------------------------------------------------
// At most one traceparent and tracestate on a request to a target.

/**
 * One per gateway with tracing on: whether an origin is one of its targets' (asked each time:
 * discovery changes the addresses a pool connects to while it runs).
 */
const targetGuards = new Set<(origin: string) => boolean>()
let subscribed = false

interface UndiciRequest {
  origin: string
  headers: unknown
  addHeader: (key: string, value: string) => UndiciRequest
}

function guardTraceFields (isTarget: (origin: string) => boolean): void {
  targetGuards.add(isTarget)
  if (subscribed) return
  subscribed = true
  // For as long as the process lives: a subscriber cannot be told apart from another app's
  // after it closes, and it costs a lookup per gateway on each undici request.
  subscribe('undici:request:create', onRequestCreate)
}

/**
 * A new undici request to a target. Subscribers run in the order they subscribed, so the
 * undici instrumentation may already have added its fields (then the earlier ones go) or may
 * add them after (then its addHeader replaces instead of appending).
 */
function onRequestCreate (message: unknown): void {
  const request = (message as { request: UndiciRequest }).request
  if (!Array.isArray(request.headers) || !isTargetOrigin(String(request.origin))) return
  keepLastTraceFields(request.headers as string[])
  const addHeader = request.addHeader
  request.addHeader = function (key, value) {
    const name = key.toLowerCase()
    if (TRACE_FIELDS.has(name)) dropField(this.headers as string[], name)
    return addHeader.call(this, key, value)
  }
}

function isTargetOrigin (origin: string): boolean {
  for (const isTarget of targetGuards) if (isTarget(origin)) return true
  return false
}

/** Drops every earlier copy of a trace field that appears more than once. */
export function keepLastTraceFields (headers: string[]): void {
  for (const name of TRACE_FIELDS) {
    let last = -1
    let count = 0
    for (let i = 0; i < headers.length; i += 2) {
      if (headers[i]!.toLowerCase() === name) {
        last = i
        count++
      }
    }
    if (count < 2) continue
    for (let i = headers.length - 2; i >= 0; i -= 2) {
      if (i !== last && headers[i]!.toLowerCase() === name) headers.splice(i, 2)
    }
  }
}

function dropField (headers: string[], name: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.toLowerCase() === name) headers.splice(i, 2)
  }
}
