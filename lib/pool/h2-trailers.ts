// undici 7's HTTP/2 client hands a response's trailers to its handler as Node's header object,
// where a handler of its current (controller) API expects the raw [name, value, …] list: its
// adapter reads the object as an empty list, so every HTTP/2 trailer (gRPC's `grpc-status`
// among them) would be lost. undici still takes handlers of its older API (onConnect,
// onHeaders, onData, onComplete, onError), which get the trailers as they came: this
// interceptor puts one in front of the gateway's handlers on HTTP/2 pools.
import type { Dispatcher } from 'undici'
import type { IncomingHttpHeaders } from 'node:http'

type Raw = Buffer | string | Array<Buffer | string>

/** Header fields as the controller API gives them: lower-case names, repeats as arrays. */
export function headersOf (raw: Raw[] | Record<string, unknown> | null | undefined): IncomingHttpHeaders {
  const headers: Record<string, string | string[]> = {}
  if (raw === null || raw === undefined) return headers
  const add = (name: string, value: unknown): void => {
    const key = name.toLowerCase()
    if (key === '__proto__') return
    const text = Array.isArray(value) ? value.map(String) : String(value)
    const had = headers[key]
    headers[key] = had === undefined ? text : ([] as string[]).concat(had, text)
  }
  if (Array.isArray(raw)) {
    for (let i = 0; i + 1 < raw.length; i += 2) add(String(raw[i]), Array.isArray(raw[i + 1]) ? (raw[i + 1] as Array<Buffer | string>).map((v) => v.toString()) : raw[i + 1]!.toString())
  } else {
    for (const name of Object.keys(raw)) add(name, raw[name])
  }
  return headers as IncomingHttpHeaders
}

class Controller implements Dispatcher.DispatchController {
  #paused = false
  #aborted = false
  #reason: Error | null = null
  resumeReading: (() => void) | null = null

  constructor (private readonly abortRequest: (reason?: Error) => void) {}

  get aborted (): boolean { return this.#aborted }
  get paused (): boolean { return this.#paused }
  get reason (): Error | null { return this.#reason }

  abort (reason: Error): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.abortRequest(reason)
  }

  pause (): void { this.#paused = true }

  resume (): void {
    if (!this.#paused) return
    this.#paused = false
    this.resumeReading?.()
  }
}

/** A controller-API handler behind undici's older API, so trailers reach it whole. */
class KeepTrailers {
  #controller: Controller | null = null
  constructor (private readonly handler: Dispatcher.DispatchHandler) {}

  onConnect (abort: (reason?: Error) => void, context?: object): void {
    this.#controller = new Controller(abort)
    this.handler.onRequestStart?.(this.#controller, context ?? {})
  }

  onHeaders (status: number, raw: Raw[], resume: () => void, statusText: string): boolean {
    const controller = this.#controller!
    controller.resumeReading = resume
    this.handler.onResponseStart?.(controller, status, headersOf(raw), statusText)
    return !controller.paused
  }

  onData (chunk: Buffer): boolean {
    this.handler.onResponseData?.(this.#controller!, chunk)
    return !this.#controller!.paused
  }

  onComplete (trailers: Raw[] | Record<string, unknown> | null): void {
    this.handler.onResponseEnd?.(this.#controller!, headersOf(trailers))
  }

  onError (err: Error): void {
    // undici may fail a request before it connected (a refused connection).
    this.#controller ??= new Controller(() => {})
    this.handler.onResponseError?.(this.#controller, err)
  }
}

/** The interceptor: every dispatch on the pool goes through KeepTrailers. */
export const keepTrailers: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (options, handler) =>
  dispatch(options, new KeepTrailers(handler) as unknown as Dispatcher.DispatchHandler)
