// gRPC's health checking protocol (grpc.health.v1.Health/Check), hand-encoded: the request
// holds one string field and the answer one enum, so two tiny protobuf messages are read and
// written here rather than pulling a protobuf library into the gateway.
export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check'

/** HealthCheckResponse.ServingStatus. */
export const SERVING_STATUS: Readonly<Record<number, string>> = { 0: 'UNKNOWN', 1: 'SERVING', 2: 'NOT_SERVING', 3: 'SERVICE_UNKNOWN' }

function varint (value: number): Buffer {
  const bytes: number[] = []
  let rest = value
  while (rest >= 0x80) {
    bytes.push((rest & 0x7f) | 0x80)
    rest = Math.floor(rest / 0x80)
  }
  bytes.push(rest)
  return Buffer.from(bytes)
}

/** A length-prefixed gRPC message holding HealthCheckRequest { service }. */
export function healthCheckRequest (service: string): Buffer {
  const name = Buffer.from(service, 'utf8')
  // Field 1, wire type 2 (length-delimited); an empty string is the default, sent as nothing.
  const message = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name])
  const frame = Buffer.alloc(5)
  frame.writeUInt32BE(message.length, 1)
  return Buffer.concat([frame, message])
}

/**
 * The serving status in a HealthCheckResponse body (gRPC frame included): 0 (UNKNOWN, protobuf's
 * default, sent as nothing) when the field is absent; null when the body is not such a message.
 */
export function servingStatus (body: Buffer): number | null {
  if (body.length < 5 || body[0] !== 0) return null
  const length = body.readUInt32BE(1)
  if (body.length < 5 + length) return null
  const message = body.subarray(5, 5 + length)
  let at = 0
  let status = 0
  while (at < message.length) {
    const key = message[at++]!
    const wire = key & 7
    let value = 0
    let shift = 1
    if (wire === 0) {
      for (;;) {
        if (at >= message.length) return null
        const byte = message[at++]!
        value += (byte & 0x7f) * shift
        shift *= 0x80
        if (byte < 0x80) break
      }
      if (key >> 3 === 1) status = value
    } else if (wire === 2) {
      if (at >= message.length) return null
      const size = message[at++]!
      at += size
    } else {
      return null
    }
  }
  return status
}
