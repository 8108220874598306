// The public options: these names are the API, documented in the README. Every field is
// optional where a default exists; `validate.ts` turns these into the complete `Config` in `config.ts`.
import type { FastifyRequest, HTTPMethods, RouteShorthandOptions } from 'fastify'
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { Registry } from 'prom-client'
import type { Problem } from '../errors/shapes.js'
import type { RateLimitPluginOptions } from '@fastify/rate-limit'
import type { Cluster, Redis } from 'ioredis'

/**
 * One upstream target: an http(s) origin (`http://host:port`, no path, query or credentials),
 * or an object with its `weight` and whether it is a `backup`, or a service found by DNS SRV
 * records. A host name (not an IP) is resolved by the gateway: see `discovery`.
 */
export type TargetInput = string | {
  /** The target's http(s) origin; map paths with `routes[].rewritePrefix`. */
  url: string
  /** Its share of traffic relative to the pool's other targets, 1–1000. [1] */
  weight?: number
  /** Takes traffic only while no primary target can. [false] */
  backup?: boolean
} | {
  /**
   * An SRV record name (Consul `*.service.consul`, Kubernetes headless services): one target
   * per address of each record, on the record's port with its weight; records of a priority
   * above the lowest are backups.
   */
  srv: string
  /** What the records' addresses speak. ['http'] */
  protocol?: 'http' | 'https'
  /** Every target of the records is a backup. [false] */
  backup?: boolean
  url?: never
  weight?: never
}

/**
 * `round-robin`: smooth weighted, as nginx. `least-request`: fewest requests in flight per
 * weight. `p2c-ewma`: two random picks by weight, the lower latency × (in flight + 1) wins.
 * `random`: weighted random.
 */
export type BalancerName = 'round-robin' | 'least-request' | 'p2c-ewma' | 'random'
/** What consistent hashing keys on: the client address, a request header or a cookie. */
export type HashKey = 'ip' | `header:${string}` | `cookie:${string}`
/** A balancer by name, or consistent hashing with bounded loads. ['round-robin'] */
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
  /** Over HTTP/2 (`protocol` 'h2' or 'h2c'): requests multiplexed on one connection, at most. [100] */
  streams?: number
}

/**
 * How the gateway speaks to a pool's targets: `'http1'`; `'h2'`, HTTP/2 over TLS offered by
 * ALPN (HTTP/1.1 where a target does not take it; https targets); `'h2c'`, HTTP/2 in clear text
 * with prior knowledge (http targets, as gRPC services inside a cluster listen).
 */
export type UpstreamProtocol = 'http1' | 'h2' | 'h2c'

/** Past these limits a request gets `503 connection_limit_reached` with `Retry-After: 1`. */
export interface LimitsInput {
  /** Requests in flight per target, at most; more wait in the pool's queue. [unlimited] */
  maxConcurrent?: number
  /** Requests waiting in the pool's queue, at most; past it they are refused at once. [unlimited] */
  maxPending?: number
  /** How long a request may wait in the queue for a free target, in ms. [1000] */
  queueTimeout?: number
}

/** A status class (`'2xx'`), a code, a list of codes or an inclusive range. */
export type StatusExpectation = '1xx' | '2xx' | '3xx' | '4xx' | '5xx' | number | number[] | { from: number, to: number }

/** Thresholds at which the status page's diagnosis reports a finding. */
export interface DiagnosisInput {
  /** Average latency over the last 5 minutes, in ms, above which a 504 is near [2000]. */
  avgLatency?: number
  /** P99 latency over 5 minutes, in ms [5000]. */
  p99Latency?: number
  /** Share of limits.maxPending in use above which 503s are near [0.8]. */
  queue?: number
  /** Share of 5xx answers over 5 minutes [0.01]. */
  errorRate?: number
  /** How many times slower (p95) or more failing than its peers' median a target must be to stand out [3]. */
  outlier?: number
  /**
   * Requests a target needs in the window before it is compared with its peers (one slow or
   * failing node), and a pool before a 5xx share of 1 or 2 failures is called critical [20].
   * Thresholds hold from the first request.
   */
  minRequests?: number
  /** A DNS lookup of a discovered target name slower than this, in ms, is a finding [200]. */
  dnsLatency?: number
  /** Average TLS handshake to a target, in ms, above which the diagnosis reports it [500]. */
  tlsLatency?: number
}

/** Prometheus metrics in prom-client's text format. */
export interface MetricsInput {
  /** Where the metrics are served. ['/metrics'] */
  path?: string
  /** A prom-client registry of the app's, so the gateway's metrics join its own; by default one of the gateway's. */
  registry?: Registry
}

/** The status page (HTML or JSON) and the lookup of a failed request by its id. */
export interface StatusInput {
  /** Where the status page is served; request stories live under `<path>/requests/<id>`. ['/_upstream'] */
  path?: string
  /** Who may see the page (the forms of `errors.expose`); anyone else gets a 404. [errors.expose] */
  expose?: ExposeInput
  /** How many failed or retried requests to keep for lookup by id [1000]. */
  keep?: number
  /** The thresholds of the diagnosis shown on top of the page. */
  diagnosis?: DiagnosisInput
  /**
   * Keep request stories in Redis too, so an id is found from any gateway instance: a
   * `redis://` URL, an ioredis client, or `{ redis, ttl [86400000], prefix ['fastify-upstream:'] }`.
   * Bounded by `keep` (across instances) and `ttl`; while Redis fails, each instance answers
   * from its own stories. [none]
   */
  store?: string | Redis | Cluster | StoryStoreInput
}

/** Where request stories are shared (status.store). */
export interface StoryStoreInput {
  /** A `redis://` or `rediss://` URL, or an ioredis client (the gateway never closes a client it was given). */
  redis: string | Redis | Cluster
  /** How long a story stays in Redis, in ms [86400000: a day]. */
  ttl?: number
  /** Put before every key the gateway writes ['fastify-upstream:']. */
  prefix?: string
}

/** Active health checks: a target failing them is taken out of rotation before requests reach it. */
export interface HealthInput {
  /** The path checked with a GET on each target; setting it (or `grpc`) turns checks on. */
  path?: string
  /**
   * Check with gRPC's `grpc.health.v1.Health/Check` instead of a GET (pools with `protocol`
   * 'h2' or 'h2c'): `SERVING` is healthy, anything else is not. `service` [''] is the service
   * asked about ('' is the server as a whole).
   */
  grpc?: { service?: string }
  /** Time between two checks of a target, in ms, ±10% so gateways do not probe in step. [5000] */
  interval?: number
  /** How long one check may take, in ms. [2000, or interval if shorter] */
  timeout?: number
  /** What a passing check answers: its status [`'2xx'`] and, optionally, a string or RegExp its body must match. */
  expect?: { status?: StatusExpectation, body?: string | RegExp }
  /** Passed checks in a row that bring a target back (HAProxy's `rise`). [2] */
  healthyAfter?: number
  /** Failed checks in a row that take a target out (HAProxy's `fall`). [3] */
  unhealthyAfter?: number
}

/** Passive ejection from real traffic (on unless `outlier: false`), as Envoy's outlier detection. */
export interface OutlierInput {
  /** Failures in a row (connect failures, timeouts, resets, upstream 502/503/504) that eject a target. [5] */
  consecutiveFailures?: number
  /** How long the first ejection lasts, in ms; each new one doubles it. [30000] */
  ejectFor?: number
  /** The longest an ejection may last, in ms. [300000] */
  maxEjectFor?: number
  /** The largest share of a pool ejected at once, in percent; one target always may be. [50] */
  maxEjectedPercent?: number
}

/**
 * Which failed tries may be tried again: `connect-failure` (refused, connect timeout, DNS, TLS),
 * `refused-stream` (closed while the request was going out), `reset` (closed before any
 * response byte), `timeout` (no headers in time, or the upstream stopped taking the body),
 * `5xx` (an upstream 5xx, or a status in `retry.statuses`).
 */
export type RetryCondition = 'connect-failure' | 'refused-stream' | 'reset' | 'timeout' | '5xx'

/** Retries go to another target when one can take traffic, and only while the response has not started. */
export interface RetryInput {
  /** Retries after the first try, 0–10. [2] */
  retries?: number
  /** The kinds of failure retried. [['connect-failure', 'refused-stream', 'reset']] */
  on?: RetryCondition[]
  /** Upstream statuses retried as `5xx` failures are (the client never sees them). [[]] */
  statuses?: number[]
  /** Methods retried when the upstream may have acted on the request; one that never reached it is retried whatever its method. [GET HEAD OPTIONS TRACE PUT DELETE] */
  methods?: string[]
  /**
   * Retries may add at most `ratio` of the pool's requests in the last second [0.2], and at
   * least `minPerSecond` [5], so a failing pool is not hammered by a retry storm.
   */
  budget?: { ratio?: number, minPerSecond?: number }
}

/** TLS to https targets. Certificates are verified by default. */
export interface TlsInput {
  /** CA certificates to trust instead of Node's bundled ones (a private CA). [Node's CAs] */
  ca?: string | Buffer | Array<string | Buffer>
  /** Client certificate for mutual TLS. [none] */
  cert?: string | Buffer
  /** Private key of `cert`. [none] */
  key?: string | Buffer
  /** The name sent as SNI and checked against the certificate. [the target's host name] */
  servername?: string
  /** Verify the target's certificate; `false` is logged once as a warning at registration. [true] */
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
  /**
   * Which addresses of a name become targets: IPv4 when it has any, else IPv6 ('prefer-ipv4');
   * the reverse ('prefer-ipv6'); one family only ('ipv4', 'ipv6'); or both ('all'). A service
   * that listens on one family only, or a network without IPv6 routes, wants 'ipv4'. ['prefer-ipv4']
   */
  family?: AddressFamily
}

/** The address families a name's lookups keep (discovery.family). */
export type AddressFamily = 'prefer-ipv4' | 'prefer-ipv6' | 'ipv4' | 'ipv6' | 'all'

/** What `auth.token` resolves with. */
export interface AuthToken {
  /** Sent as `Authorization: Bearer <value>`. */
  value: string
  /** When it stops being valid: epoch milliseconds or a Date. [none: valid until an upstream 401] */
  expiresAt?: number | Date
}

/** Credentials the gateway adds to every request to the pool's targets (clients cannot override them). */
export interface AuthInput {
  /** Static headers sent to the targets, replacing a client's field of the same name. [none] */
  headers?: Record<string, string>
  /** Called for a bearer token before the first request, shortly before it expires and once after an upstream 401; one call at a time. [none] */
  token?: () => Promise<AuthToken> | AuthToken
}

/** A pool: the targets one or more routes send traffic to, and how. */
export interface PoolInput {
  /** The pool's targets, at least one (required). */
  targets: TargetInput[]
  /** How a request's target is chosen. ['round-robin'] */
  balancer?: BalancerInput
  /** Per-phase timeouts of a request to this pool. [connect 2000, headers 30000, body 60000, total false] */
  timeouts?: TimeoutsInput
  /** Connections to each target. [no cap, keepAlive 4000] */
  connections?: ConnectionsInput
  /** Requests in flight per target and waiting per pool. [unlimited, queueTimeout 1000] */
  limits?: LimitsInput
  /** Active health checks. [off] */
  health?: HealthInput
  /** Passive ejection of failing targets, or `false` to turn it off. [on, with its defaults] */
  outlier?: OutlierInput | false
  /** A recovered or re-enabled target's share of its weight ramps from 10% to 100% over this many ms. [0: at once] */
  slowStart?: number
  /** When a failed try is tried again on another target. [2 retries on connect failures and resets] */
  retry?: RetryInput
  /** TLS settings for https targets. [certificates verified] */
  tls?: TlsInput
  discovery?: DiscoveryInput
  /** Credentials for the pool's targets: `{ headers }` and/or `{ token }`. [none] */
  auth?: AuthInput
  /** When every target is out of rotation, send traffic to all but drained ones instead of answering 503. [false] */
  panic?: boolean
  /**
   * Session affinity (HAProxy's `cookie … insert`): the gateway sets a cookie naming, opaquely,
   * the target that served the client, whose next requests go to that target while it is in
   * rotation. [off]
   */
  sticky?: StickyInput
  /** How the gateway speaks to the targets. ['http1'] */
  protocol?: UpstreamProtocol
}

/** pools.<name>.sticky: the gateway's own affinity cookie. */
export interface StickyInput {
  /** The cookie's name. ['upstream'] */
  cookie?: string
  /** How long the cookie lasts, in ms (its Max-Age); without it, for the browser session. [session] */
  ttl?: number
}

/** What a request's header, cookie or query parameter must be: equal to a string, or match a RegExp. */
export type MatchValue = string | RegExp

/**
 * One rule of `routes[].match`: every condition given must fit (a header, cookie or query
 * parameter by name); the first rule that fits sends the request to its `pool`.
 */
export interface MatchRule {
  /** Request headers by name (any case): value or RegExp. */
  header?: Record<string, MatchValue>
  /** Cookies by name: value or RegExp. */
  cookie?: Record<string, MatchValue>
  /** Query parameters by name: value or RegExp (a repeated parameter fits when one of its values does). */
  query?: Record<string, MatchValue>
  /** The pool such a request goes to (required). */
  pool: string
}

/** routes[].mirror: a copy of each request (or `percent` of them) to another pool; its answer is thrown away. */
export interface MirrorInput {
  /** The pool the copies go to (required). */
  pool: string
  /** The share of requests copied, 0–100. [100] */
  percent?: number
  /** Copies in flight at most; past it a copy is skipped (counted). [100] */
  maxInFlight?: number
  /** Requests with a larger body (in bytes) are not copied. [1048576] */
  bodyLimit?: number
}

/**
 * Changes what goes upstream: called once per request (a retry sends what it returned) with
 * the headers after the gateway's forwarding rules, `host` still the client's. Returns the
 * headers to send, synchronously; a `host` other than the client's goes to every target
 * instead of the target's own. Hop-by-hop fields in the result are left out.
 */
export type RewriteRequestHeaders = (request: FastifyRequest, headers: IncomingHttpHeaders) => OutgoingHttpHeaders

/**
 * Changes what comes back, before `Location` rewriting and before anything reaches the client:
 * the headers after the gateway's forwarding rules (hop-by-hop fields gone, `Via` added) and
 * the upstream's status. Returns the headers to send, synchronously; the upstream's
 * `Content-Length` is kept whatever it returns.
 */
export type RewriteResponseHeaders = (headers: IncomingHttpHeaders, request: FastifyRequest, status: number) => OutgoingHttpHeaders

/**
 * Options handed to the route's two Fastify routes (`<prefix>` and `<prefix>/*`) as they are,
 * as `@fastify/http-proxy` takes them: hooks that run only for this route (auth, tenants), its
 * `config` (read by hooks as `request.routeOptions.config`) and `constraints` (host, version).
 */
export type RouteFastifyOptions = Pick<RouteShorthandOptions, 'onRequest' | 'preHandler' | 'preValidation' | 'constraints'> & {
  /** The route's config for the app's hooks (`request.routeOptions.config`), beside the gateway's `upstream` key. */
  config?: Record<string, unknown>
}

/** A route: a path prefix of the app proxied to a pool. */
export interface RouteInput extends RouteFastifyOptions {
  /** Path prefix, starting with `/`, unique across routes (required). */
  prefix: string
  /** The name of the pool that serves it (required). */
  pool: string
  /** What the prefix becomes upstream: by default it is stripped (`/users/7` → `/7`). [''] */
  rewritePrefix?: string
  /** The methods routed; others answer 404. [DELETE GET HEAD PATCH POST PUT OPTIONS] */
  methods?: HTTPMethods[]
  /** Tunnel WebSocket upgrades on this route to its pool. [false] */
  websocket?: boolean
  /** The route carries gRPC calls: its pool must speak HTTP/2 (`protocol` 'h2' or 'h2c'), checked at registration. [false] */
  grpc?: boolean
  /** Per-field override of the pool's `timeouts`. [the pool's] */
  timeouts?: TimeoutsInput
  /** Per-field override of the pool's `retry` (the budget stays the pool's). [the pool's] */
  retry?: RetryInput
  /** This route's own @fastify/rate-limit options, or false to exempt it from the global limit. [the global limit] */
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
  /**
   * Rules that send a request to another pool by its headers, cookies or query; the first that
   * fits wins, before `split`. [none]
   */
  match?: MatchRule[]
  /**
   * Shares of the route's traffic, in percent, for other pools (`{ canary: 5 }`); the rest go
   * to `pool`. A client keeps the pool it was dealt (a `<proxyName>-split` cookie). [none]
   */
  split?: Record<string, number>
  /** Copies of the requests to another pool, never delaying or failing the client's answer. [none] */
  mirror?: MirrorInput
  /** Changes the request's headers on their way upstream (see `RewriteRequestHeaders`). [none] */
  rewriteRequestHeaders?: RewriteRequestHeaders
  /** Changes the answer's headers on their way to the client (see `RewriteResponseHeaders`). [none] */
  rewriteResponseHeaders?: RewriteResponseHeaders
  /**
   * Keep the upstream's answers to GET and HEAD as a shared cache may (RFC 9111), serve them
   * while fresh, and in place of a failure while stale-if-error allows. `true`: the defaults. [off]
   */
  cache?: boolean | CacheInput
}

/** A route's cache (routes[].cache). */
export interface CacheInput {
  /**
   * Where answers are kept: `'memory'` (this process, bounded by maxBytes), a `redis://` or
   * `rediss://` URL, or an ioredis client (shared by every gateway instance). ['memory']
   */
  store?: 'memory' | string | Redis | Cluster
  /** The most bytes the memory store holds; the least recently used answers go first. [67108864] */
  maxBytes?: number
  /** The largest answer kept, in bytes; a larger one streams to the client and is not stored. [1048576] */
  maxEntryBytes?: number
  /**
   * How long past its freshness a stored answer may stand in for a failure or an upstream 5xx,
   * in ms, when the answer's own `stale-if-error` says less. [0: the answer's own only]
   */
  staleIfError?: number
  /**
   * How long past its freshness a stored answer is served at once while a background request
   * refreshes it, in ms, when the answer's own `stale-while-revalidate` says less. [0: the answer's own only]
   */
  staleWhileRevalidate?: number
  /** Concurrent misses for one key wait for one upstream request (nginx's proxy_cache_lock). [true] */
  lock?: boolean
  /** Put before every key written to Redis ['fastify-upstream:']. */
  prefix?: string
}

/**
 * How much an error answer shows: `'public'` (safe for the internet: nothing internal),
 * `'full'` (operators: pool, target, tries, causes, hints), `'auto'` (full unless
 * `NODE_ENV=production`, decided at registration) or a function of the request.
 */
export type ExposeInput = 'public' | 'full' | 'auto' | ((request: FastifyRequest) => boolean)

/** How failures are answered. */
export interface ErrorsInput {
  /** How much an error answer shows, and to whom. ['auto'] */
  expose?: ExposeInput
  /** The gateway's name in `Via` and `Proxy-Status`; a structured-field token. ['fastify-upstream'] */
  proxyName?: string
  /** Prefix of the problem `type` URI, followed by the error type. ['urn:fastify-upstream:error:'] */
  typeBase?: string
  /** Who to tell, shown to visitors on error pages ("tell the site's operators (…)"). [none] */
  contact?: string
  /**
   * Replaces the answer's body: a string is sent as HTML to browsers and text otherwise, a
   * Buffer as it is, an object as problem+json. Status and headers stay the gateway's. [none]
   */
  render?: (problem: Problem, request: FastifyRequest) => string | Buffer | Problem | Record<string, unknown>
  /** Upstream statuses whose body the gateway replaces with its own page (same status). [[]] */
  intercept?: number[]
}

/** The plugin's options. */
export interface UpstreamOptions {
  /** The pools of targets, by name (required). */
  pools: Record<string, PoolInput>
  /** The routes proxied to those pools (required). */
  routes: RouteInput[]
  /** How failures are answered. [expose 'auto'] */
  errors?: ErrorsInput
  /** The status page and request lookup, or `false` to remove them. [{ path: '/_upstream', keep: 1000 }] */
  status?: StatusInput | false
  /** Prometheus metrics, or `false` to remove the route. [{ path: '/metrics' }] */
  metrics?: MetricsInput | false
  /** A rate limit on every proxied route (not the app's own), in memory or shared through Redis. [none] */
  rateLimit?: RateLimitInput
  /** The header the request id goes upstream in and comes back to the client in. ['x-request-id'] */
  requestIdHeader?: string
  /** OpenTelemetry spans for each try, and one `traceparent` upstream: `'auto'` (default) is on when @opentelemetry/api is installed and a tracer provider registered. */
  tracing?: boolean | 'auto'
}

/**
 * `@fastify/rate-limit`'s options for the proxied routes, plus where the counts live and what
 * happens when that store fails. (`skipOnError` is `onStoreError`'s business.)
 */
export interface RateLimitInput extends Omit<RateLimitPluginOptions, 'redis' | 'skipOnError'> {
  /** Send the IETF draft's `RateLimit-Limit`/`-Remaining`/`-Reset`; false: `X-RateLimit-*`. [true] */
  enableDraftSpec?: boolean
  /**
   * Counts in Redis, shared by every gateway instance that uses it: a `redis://` or `rediss://`
   * URL (the gateway opens the connection and closes it with the app) or an ioredis client (yours
   * to close). [none: each instance counts in its own memory]
   */
  redis?: string | Redis | Cluster
  /**
   * When the store fails or takes over a second: `'allow'` lets the request through (fail open,
   * logged once per outage), `'deny'` answers 503 `rate_limit_store_unavailable`. ['allow']
   */
  onStoreError?: 'allow' | 'deny'
}
