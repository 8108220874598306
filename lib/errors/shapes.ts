// The shapes of what a failure tells: one try of a request, and the problem details a client
// reads. A leaf (it imports only the taxonomy), so the public option types can name them.
import type { Blame, Phase, ProxyErrorType } from './taxonomy.js'

/** One try of a request: where it went and how it ended. */
export interface AttemptRecord {
  /** `host:port` of the target tried. */
  target: string
  /** The error type of this try, or null if it got a response. */
  error: ProxyErrorType | null
  cause: string | null
  phase: Phase
  ms: number
  /** The upstream status, when it answered. */
  status?: number
}

/** The RFC 9457 problem details the gateway answers with (and errors.render receives). */
export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  instance: string
  error: ProxyErrorType
  blame: Blame
  phase: Phase
  requestId: string
  timestamp: string
  temporary: boolean
  hint: string
  /** Full exposure only. */
  pool?: string | null
  target?: string | null
  cause?: string | null
  attempts?: readonly AttemptRecord[]
}
