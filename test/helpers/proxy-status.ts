// Reads a Proxy-Status header (RFC 9209) the way a client would: parsed as an RFC 9651 list by
// the same library the gateway serializes it with, so tests compare values, never spellings.
import { parseList, Token } from 'structured-headers'

export interface ProxyStatusMember {
  /** The intermediary's name (a token or a string). */
  proxy: string
  /** Its parameters, tokens as their text: `{ error: 'connection_refused', 'received-status': 502 }`. */
  params: Record<string, string | number | boolean>
}

/** Every member, in order (an upstream's first, the gateway's last); throws if unparseable. */
export function proxyStatus (header: unknown): ProxyStatusMember[] {
  if (header === undefined) throw new Error('no Proxy-Status header')
  const text = Array.isArray(header) ? header.join(', ') : String(header)
  return parseList(text).map((member) => {
    const [value, parameters] = member
    if (Array.isArray(value)) throw new Error(`Proxy-Status member is an inner list: ${text}`)
    const params: ProxyStatusMember['params'] = {}
    for (const [key, param] of parameters) params[key] = plain(param)
    return { proxy: plain(value) as string, params }
  })
}

/** The gateway's own member: the last one. */
export function ourProxyStatus (header: unknown): ProxyStatusMember {
  const members = proxyStatus(header)
  const last = members.at(-1)
  if (last === undefined) throw new Error('empty Proxy-Status header')
  return last
}

function plain (value: unknown): string | number | boolean {
  if (value instanceof Token) return value.toString()
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value
  throw new Error(`unexpected Proxy-Status value ${String(value)}`)
}
