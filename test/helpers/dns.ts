// A real DNS server on loopback (UDP, port 0) for discovery tests: its records can change while
// a test runs, and it can be made slow, silent, answer NXDOMAIN, or be stopped and started again
// on the same port.
import dgram from 'node:dgram'
import type { AddressInfo } from 'node:net'
import dnsPacket from 'dns-packet'

export interface SrvRecord { priority: number, weight: number, port: number, target: string }

export interface Records {
  a?: string[]
  aaaa?: string[]
  srv?: SrvRecord[]
  /** Seconds [1]. */
  ttl?: number
}

export interface DnsServer {
  /** `127.0.0.1:port`, for discovery.servers. */
  address: string
  /** Sets (or with undefined, removes) a name's records; names are matched without case. */
  set: (name: string, records: Records | undefined) => void
  /** Milliseconds to wait before each answer. */
  delay: number
  /** `silent`: queries get no answer at all (the resolver times out). */
  mode: 'answer' | 'silent' | 'servfail'
  /** Queries received, by `TYPE name`. */
  queries: string[]
  /** Closes the socket: queries are refused until start(). */
  stop: () => Promise<void>
  /** Listens again on the same port. */
  start: () => Promise<void>
}

const NXDOMAIN = 3
const SERVFAIL = 2

interface Teardown { teardown: (fn: () => unknown) => void }

export async function startDns (t: Teardown, initial: Record<string, Records> = {}): Promise<DnsServer> {
  const records = new Map<string, Records>(Object.entries(initial).map(([name, r]) => [name.toLowerCase(), r]))
  const timers = new Set<NodeJS.Timeout>()
  let socket: dgram.Socket | null = null
  let port = 0

  const answer = (query: dnsPacket.DecodedPacket): Buffer => {
    const question = query.questions![0]!
    const name = question.name.toLowerCase()
    const found = records.get(name)
    const ttl = found?.ttl ?? 1
    const answers: dnsPacket.Answer[] = []
    if (found !== undefined) {
      if (question.type === 'A') for (const data of found.a ?? []) answers.push({ type: 'A', name: question.name, ttl, data })
      if (question.type === 'AAAA') for (const data of found.aaaa ?? []) answers.push({ type: 'AAAA', name: question.name, ttl, data })
      if (question.type === 'SRV') for (const data of found.srv ?? []) answers.push({ type: 'SRV', name: question.name, ttl, data })
    }
    const rcode = server.mode === 'servfail' ? SERVFAIL : found === undefined ? NXDOMAIN : 0
    return dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER | rcode,
      questions: query.questions,
      answers
    })
  }

  const listen = async (): Promise<void> => {
    const s = dgram.createSocket('udp4')
    s.on('message', (message, remote) => {
      let query: dnsPacket.DecodedPacket
      try {
        query = dnsPacket.decode(message)
      } catch {
        return
      }
      const question = query.questions?.[0]
      if (question === undefined) return
      server.queries.push(`${question.type} ${question.name}`)
      if (server.mode === 'silent') return
      const reply = answer(query)
      const send = (): void => { if (socket === s) s.send(reply, remote.port, remote.address) }
      if (server.delay <= 0) {
        send()
        return
      }
      const timer = setTimeout(() => {
        timers.delete(timer)
        send()
      }, server.delay)
      timers.add(timer)
    })
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.bind(port, '127.0.0.1', () => {
        s.off('error', reject)
        resolve()
      })
    })
    port = (s.address() as AddressInfo).port
    socket = s
  }

  const stop = async (): Promise<void> => {
    const s = socket
    socket = null
    for (const timer of timers) clearTimeout(timer)
    timers.clear()
    if (s !== null) await new Promise<void>((resolve) => { s.close(() => { resolve() }) })
  }

  const server: DnsServer = {
    address: '',
    set: (name, r) => {
      if (r === undefined) records.delete(name.toLowerCase())
      else records.set(name.toLowerCase(), r)
    },
    delay: 0,
    mode: 'answer',
    queries: [],
    stop,
    start: listen
  }
  await listen()
  server.address = `127.0.0.1:${port}`
  t.teardown(stop)
  return server
}
