// The public options: these names are the API, documented in the README. Every field is
// optional where a default exists; `validate.ts` turns these into the complete `Config` in `config.ts`.
import type { FastifyRequest, HTTPMethods } from 'fastify'
import type { Registry } from 'prom-client'

export type TargetInput =
  | string
  | { url: string, weight?: number, backup?: boolean }
  /**
   * A service found by DNS SRV records (Consul `*.service.consul`, Kubernetes headless services):
   * one target per address of each record, on the record's port with its weight; records of a
   * priority above the lowest are backups. `protocol` ['http'].
   */
  | { srv: string, protocol?: 'http' | 'https', backup?: boolean, url?: never, weight?: never }

export type BalancerName = 'round-robin' | 'least-request' | 'p2c-ewma' | 'random'
export type HashKey = 'ip' | `header:${string}` | `cookie:${string}`
export type BalancerInput = BalancerName | { hash: HashKey }

/** Milliseconds; `false` turns a timeout off. */
export interface TimeoutsInput {
  /** Opening a TCP (and TLS) connection to a target. [2000] */
  connect?: number | false
  /** From the request sent to the response headers. [30000] */
  headers?: number | false
  /** The longest silence while the response body streams. [60000] */
  body?: number | false
  /** The whole exchange, across every try. [false: Server-Sent Events and downloads may last] */
  total?: number | false
}

export interface ConnectionsInput {
  /** Open connections per target, at most; waiting for one is the `queue` phase. [false: no cap] */
  perTarget?: number | false
  /** How long an idle keep-alive connection is kept. [4000] */
  keepAlive?: number
}

export interface LimitsInput {
  maxConcurrent?: number
  maxPending?: number
  queueTimeout?: number
}

export type StatusExpectation = '1xx' | '2xx' | '3xx' | '4xx' | '5xx' | number | number[] | { from: number, to: number }

/** Thresholds at which the status page's diagnosis reports a finding. */
export interface DiagnosisInput {
  /** Average latency over 5 minutes, in ms, above which a 504 is near [2000]. */
  avgLatency?: number
  /** P99 latency over 5 minutes, in ms [5000]. */
  p99Latency?: number
  /** Share of limits.maxPending in use above which 503s are near [0.8]. */
  queue?: number
  /** Share of 5xx answers over 5 minutes [0.01]. */
  errorRate?: number
  /** How many times slower (p95) or more failing than its peers' median a target must be to stand out [3]. */
  outlier?: number
  /** Requests in the window below which rates and latencies are not judged [20]. */
  minRequests?: number
  /** A DNS lookup of a discovered target name slower than this, in ms, is a finding [200]. */
  dnsLatency?: number
}

export interface MetricsInput {
  path?: string
  /** A prom-client registry of the app's, so the gateway's metrics join its own; by default one of the gateway's. */
  registry?: Registry
}

export interface StatusInput {
  path?: string
  expose?: ExposeInput
  /** How many failed or retried requests to keep for lookup by id [1000]. */
  keep?: number
  diagnosis?: DiagnosisInput
}

export interface HealthInput {
  path: string
  interval?: number
  timeout?: number
  expect?: { status?: StatusExpectation, body?: string | RegExp }
  healthyAfter?: number
  unhealthyAfter?: number
}

export interface OutlierInput {
  consecutiveFailures?: number
  ejectFor?: number
  maxEjectFor?: number
  maxEjectedPercent?: number
}

export type RetryCondition = 'connect-failure' | 'refused-stream' | 'reset' | 'timeout' | '5xx'

export interface RetryInput {
  retries?: number
  on?: RetryCondition[]
  statuses?: number[]
  methods?: string[]
  budget?: { ratio?: number, minPerSecond?: number }
}

export interface TlsInput {
  ca?: string | Buffer | Array<string | Buffer>
  cert?: string | Buffer
  key?: string | Buffer
  servername?: string
  rejectUnauthorized?: boolean
}

/** How target names (URLs whose host is not an IP) are resolved into one target per address. */
export interface DiscoveryInput {
  /** Re-resolve when the answer's TTL runs out ('ttl'), or every so many ms ['ttl']. */
  refresh?: 'ttl' | number
  /** Shortest time an answer is kept, in ms; also the first retry after a failed lookup [1000]. */
  minTtl?: number
  /** Longest time an answer is kept, in ms; also the longest wait between retries [60000]. */
  maxTtl?: number
  /** The longest one lookup may take, in ms; then it fails with ETIMEOUT [2000]. */
  timeout?: number
  /** DNS servers to ask, as 'ip' or 'ip:port' (e.g. ['127.0.0.1:5353']) [the system's]. */
  servers?: string[]
}

export interface AuthInput {
  headers?: Record<string, string>
  token?: () => Promise<{ value: string, expiresAt?: number | Date }>
}

export interface PoolInput {
  targets: TargetInput[]
  balancer?: BalancerInput
  timeouts?: TimeoutsInput
  connections?: ConnectionsInput
  limits?: LimitsInput
  health?: HealthInput
  outlier?: OutlierInput | false
  slowStart?: number
  retry?: RetryInput
  tls?: TlsInput
  discovery?: DiscoveryInput
  auth?: AuthInput
  panic?: boolean
}

export interface RouteInput {
  prefix: string
  pool: string
  rewritePrefix?: string
  methods?: HTTPMethods[]
  websocket?: boolean
  timeouts?: TimeoutsInput
  retry?: RetryInput
  rateLimit?: Record<string, unknown> | false
  /**
   * The largest request body the route forwards, in bytes; larger ones get 413 before (or as
   * soon as) they are seen. [false: bodies of any size stream through]
   */
  bodyLimit?: number | false
  /**
   * Rewrite `Location` and `Content-Location` that point at a target (or at `rewritePrefix`)
   * to the address and prefix the client used. [true]
   */
  rewriteLocation?: boolean
}

export type ExposeInput = 'public' | 'full' | 'auto' | ((request: FastifyRequest) => boolean)

export interface ErrorsInput {
  expose?: ExposeInput
  proxyName?: string
  typeBase?: string
  contact?: string
  render?: (problem: Record<string, unknown>, request: FastifyRequest) => string | Buffer | Record<string, unknown>
  intercept?: number[]
}

export interface UpstreamOptions {
  pools: Record<string, PoolInput>
  routes: RouteInput[]
  errors?: ErrorsInput
  status?: StatusInput | false
  metrics?: MetricsInput | false
  rateLimit?: Record<string, unknown>
  requestIdHeader?: string
}
