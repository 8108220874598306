// The complete, validated configuration. Everything after `validate.ts` receives these types:
// every default is filled in, so no other module re-checks or re-defaults an option.
import type { HTTPMethods } from 'fastify'
import type { AddressFamily, BalancerInput, ExposeInput, ErrorsInput, RetryCondition, TlsInput, AuthInput, HashKey, RewriteRequestHeaders, RewriteResponseHeaders, RouteFastifyOptions, UpstreamProtocol } from './types.js'
import type { Registry } from 'prom-client'
import type { Cluster, Redis } from 'ioredis'

/** Milliseconds; `false`: that timeout is off. */
export interface Timeouts {
  connect: number | false
  headers: number | false
  body: number | false
  total: number | false
}

export interface TargetConfig {
  /** Normalized origin, e.g. `http://127.0.0.1:3001`; for SRV, `srv+http://_http._tcp.name`. */
  url: string
  weight: number
  backup: boolean
  /** An SRV target: the record name and the protocol its addresses speak. */
  srv: { name: string, protocol: 'http:' | 'https:' } | null
}

export interface DiscoveryConfig {
  refresh: 'ttl' | number
  minTtl: number
  maxTtl: number
  /** Bound of one lookup, in ms. */
  timeout: number
  /** `host:port` DNS servers; null: the system's. */
  servers: string[] | null
  family: AddressFamily
}

export type BalancerConfig =
  | { kind: 'round-robin' | 'least-request' | 'p2c-ewma' | 'random' }
  | { kind: 'hash', key: HashKey }

export interface HealthConfig {
  path: string
  /** Checks by grpc.health.v1.Health/Check (then `path` is its method's path); null for GET. */
  grpc: { service: string } | null
  interval: number
  timeout: number
  expect: { status: (status: number) => boolean, statusText: string, body: string | RegExp | null }
  healthyAfter: number
  unhealthyAfter: number
}

export interface OutlierConfig {
  consecutiveFailures: number
  ejectFor: number
  maxEjectFor: number
  maxEjectedPercent: number
}

export interface RetryConfig {
  retries: number
  on: ReadonlySet<RetryCondition>
  statuses: ReadonlySet<number>
  methods: ReadonlySet<string>
  budget: { ratio: number, minPerSecond: number }
}

export interface PoolConfig {
  name: string
  targets: TargetConfig[]
  balancer: BalancerConfig
  timeouts: Timeouts
  /** perTarget: Infinity for no cap. streams: requests per connection over HTTP/2. */
  connections: { perTarget: number, keepAlive: number, streams: number }
  limits: { maxConcurrent: number, maxPending: number, queueTimeout: number }
  health: HealthConfig | null
  outlier: OutlierConfig | null
  slowStart: number
  retry: RetryConfig
  tls: Required<Pick<TlsInput, 'rejectUnauthorized'>> & Omit<TlsInput, 'rejectUnauthorized'>
  discovery: DiscoveryConfig
  auth: AuthConfig | null
  panic: boolean
  sticky: StickyConfig | null
  protocol: UpstreamProtocol
}

export interface StickyConfig {
  cookie: string
  /** Max-Age in ms; null: a session cookie. */
  ttl: number | null
}

/** One condition of a match rule; `name` in lower case for headers. */
export interface MatchCondition {
  name: string
  value: string | RegExp
}

export interface MatchRuleConfig {
  header: MatchCondition[]
  cookie: MatchCondition[]
  query: MatchCondition[]
  pool: string
}

/** A pool's share of a split route: the requests whose bucket (0–9999) is below `upTo`. */
export interface SplitShare {
  pool: string
  upTo: number
}

export interface MirrorConfig {
  pool: string
  percent: number
  maxInFlight: number
  bodyLimit: number
}

export interface AuthConfig {
  /** Header names lower-cased, as Node gives a request's; empty for none. */
  headers: Record<string, string>
  token: NonNullable<AuthInput['token']> | null
}

export interface RouteConfig {
  prefix: string
  pool: string
  rewritePrefix: string
  methods: HTTPMethods[]
  websocket: boolean
  /** The route carries gRPC calls (its pool speaks HTTP/2: checked at registration). */
  grpc: boolean
  /** The pool's timeouts with the route's overrides applied. */
  timeouts: Timeouts
  /** The pool's retry policy with the route's overrides applied. */
  retry: RetryConfig
  rateLimit: Record<string, unknown> | false | null
  /** Bytes; null: no limit. */
  bodyLimit: number | null
  rewriteLocation: boolean
  /**
   * The longest silence a WebSocket tunnel of this route may keep: `timeouts.body` when the
   * route itself sets it; null (no idle timer) otherwise, as the pool's value is for HTTP bodies.
   */
  tunnelIdle: number | null
  rewriteRequestHeaders: RewriteRequestHeaders | null
  rewriteResponseHeaders: RewriteResponseHeaders | null
  /** Handed to the route's Fastify routes as they are; only the keys the route gave. */
  fastify: RouteFastifyOptions
  match: MatchRuleConfig[]
  /** Shares in basis points, cumulative; the rest go to `pool`. Empty: no split. */
  split: SplitShare[]
  mirror: MirrorConfig | null
  /**
   * The route as it serves each other pool `match` and `split` may choose: that pool's
   * timeouts and retry with the route's overrides applied (everything else is the route's).
   */
  variants: ReadonlyMap<string, RouteConfig>
  /** Null: the route does not cache. */
  cache: CacheConfig | null
}

export interface CacheConfig {
  /** 'memory', or a URL the gateway connects to, or the user's own client. */
  store: 'memory' | string | Redis | Cluster
  maxBytes: number
  maxEntryBytes: number
  /** Milliseconds (0: the answer's own window only). */
  staleIfError: number
  staleWhileRevalidate: number
  lock: boolean
  prefix: string
}

export interface ErrorsConfig {
  expose: Exclude<ExposeInput, 'auto'>
  proxyName: string
  typeBase: string
  contact: string | null
  render: NonNullable<ErrorsInput['render']> | null
  intercept: ReadonlySet<number>
}

export interface Config {
  pools: Map<string, PoolConfig>
  routes: RouteConfig[]
  errors: ErrorsConfig
  status: StatusConfig | null
  metrics: { path: string, registry: Registry | null } | null
  /** Null: no limit on any route. */
  rateLimit: RateLimitConfig | null
  requestIdHeader: string
  /** OpenTelemetry spans for tries: on, off, or on when a tracer provider is registered. */
  tracing: boolean | 'auto'
}

export interface RateLimitConfig {
  /** What goes to @fastify/rate-limit as it is: the options without ours. */
  plugin: Record<string, unknown>
  /** A URL the gateway connects to, or the user's own client; null: counts in memory. */
  redis: string | Redis | Cluster | null
  onStoreError: 'allow' | 'deny'
}

export interface DiagnosisConfig {
  avgLatency: number
  p99Latency: number
  queue: number
  errorRate: number
  outlier: number
  minRequests: number
  /** DNS lookups slower than this (ms) are a finding. */
  dnsLatency: number
  tlsLatency: number
}

export interface StatusConfig {
  path: string
  /** Null: as errors.expose. */
  expose: ErrorsConfig['expose'] | null
  keep: number
  diagnosis: DiagnosisConfig
  /** Request stories shared through Redis; null: each instance keeps its own only. */
  store: StoryStoreConfig | null
}

export interface StoryStoreConfig {
  redis: string | Redis | Cluster
  /** How long a story lives in Redis, in ms. */
  ttl: number
  /** Put before every key. */
  prefix: string
}

export type { BalancerInput }
