// The gRPC decisions without a socket: status mapping, message encoding, deadlines, the health
// check's messages, what counts as a gRPC call.
import t from 'tap'
import { encodeGrpcMessage, fromHttpStatus, grpcStatusOf, GRPC, GRPC_OVER_HTTP1 } from '../../lib/errors/grpc.js'
import { GATEWAY_CODES } from '../../lib/errors/classify.js'
import { formatGrpcTimeout, parseGrpcTimeout } from '../../lib/proxy/grpc-deadline.js'
import { healthCheckRequest, servingStatus } from '../../lib/pool/grpc-health.js'
import { acceptsTrailers, isGrpc } from '../../lib/proxy/forwarding.js'
import type { ProxyErrorType } from '../../lib/errors/taxonomy.js'

const status = (error: ProxyErrorType, more: { cause?: string | null, status?: number, receivedStatus?: number | null } = {}): number =>
  grpcStatusOf({ error, cause: more.cause ?? null, status: more.status ?? 502, receivedStatus: more.receivedStatus ?? null })

t.test('failures map to the gRPC statuses a gRPC client acts on', async (t) => {
  for (const error of ['dns_error', 'connection_refused', 'connection_timeout', 'tls_protocol_error', 'destination_unavailable', 'connection_terminated', 'http_response_incomplete'] as const) {
    t.equal(status(error), GRPC.UNAVAILABLE, error)
  }
  t.equal(status('http_response_timeout'), GRPC.DEADLINE_EXCEEDED)
  t.equal(status('http_response_timeout', { cause: GATEWAY_CODES.grpcDeadline }), GRPC.DEADLINE_EXCEEDED)
  t.equal(status('connection_read_timeout'), GRPC.DEADLINE_EXCEEDED)
  t.equal(status('connection_limit_reached'), GRPC.RESOURCE_EXHAUSTED)
  t.equal(status('http_request_denied'), GRPC.RESOURCE_EXHAUSTED)
  t.equal(status('http_request_error', { status: 400 }), GRPC.INVALID_ARGUMENT)
  t.equal(status('http_request_error', { status: 404 }), GRPC.UNIMPLEMENTED)
  t.equal(status('proxy_internal_error', { cause: GATEWAY_CODES.credentials }), GRPC.UNAUTHENTICATED)
  t.equal(status('proxy_internal_error', { cause: GRPC_OVER_HTTP1 }), GRPC.UNIMPLEMENTED)
  t.equal(status('proxy_internal_error'), GRPC.INTERNAL)
  t.equal(status('upstream_error_status', { receivedStatus: 503 }), GRPC.UNAVAILABLE)
  t.equal(fromHttpStatus(401), GRPC.UNAUTHENTICATED)
  t.equal(fromHttpStatus(500), GRPC.UNKNOWN)
})

t.test('grpc-message is percent-encoded: non-ASCII and % itself', async (t) => {
  t.equal(encodeGrpcMessage('plain words: ok'), 'plain words: ok')
  t.equal(encodeGrpcMessage('100% down'), '100%25 down')
  t.equal(encodeGrpcMessage('café\n'), 'caf%C3%A9%0A')
})

t.test('grpc-timeout: every unit, malformed values ignored, what is left written in ms', async (t) => {
  t.equal(parseGrpcTimeout('2S'), 2000)
  t.equal(parseGrpcTimeout('1H'), 3_600_000)
  t.equal(parseGrpcTimeout('3M'), 180_000)
  t.equal(parseGrpcTimeout('250m'), 250)
  t.equal(parseGrpcTimeout('5000u'), 5)
  t.equal(parseGrpcTimeout('1000000n'), 1)
  t.equal(parseGrpcTimeout('123456789S'), null, 'at most 8 digits')
  t.equal(parseGrpcTimeout('1s'), null)
  t.equal(parseGrpcTimeout(undefined), null)
  t.equal(formatGrpcTimeout(470.6), '470m')
  t.equal(formatGrpcTimeout(-3), '1m', 'never 0 or less: the gateway answers itself when none is left')
})

t.test('the health check\'s messages: HealthCheckRequest out, ServingStatus in', async (t) => {
  t.same([...healthCheckRequest('')], [0, 0, 0, 0, 0])
  t.same([...healthCheckRequest('a.B')], [0, 0, 0, 0, 5, 0x0a, 3, 0x61, 0x2e, 0x42])
  t.equal(servingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 1])), 1)
  t.equal(servingStatus(Buffer.from([0, 0, 0, 0, 0])), 0, 'UNKNOWN is the default, sent as nothing')
  t.equal(servingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08])), null, 'a cut varint')
  t.equal(servingStatus(Buffer.from([1, 0, 0, 0, 0])), null, 'a compressed frame is not read')
  t.equal(servingStatus(Buffer.from('HTTP/1.1')), null)
})

t.test('a gRPC call is told by its content-type; TE: trailers by its list', async (t) => {
  t.ok(isGrpc('application/grpc'))
  t.ok(isGrpc('application/grpc+proto'))
  t.ok(isGrpc('Application/GRPC; charset=utf-8'))
  t.notOk(isGrpc('application/grpc-web'))
  t.notOk(isGrpc('application/json'))
  t.notOk(isGrpc(undefined))
  t.ok(acceptsTrailers('trailers'))
  t.ok(acceptsTrailers('gzip;q=0.5, trailers'))
  t.notOk(acceptsTrailers('gzip'))
  t.notOk(acceptsTrailers(undefined))
})
