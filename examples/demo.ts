// `npm run demo`: a gateway in front of three local upstream services, one of them faulty,
// to show how fastify-upstream explains a failure: to the client (problem+json or text, and
// the Proxy-Status header), and to the operator (one log line per failed request).
//
//   users   two healthy instances (round-robin); each answer says which instance answered;
//           /users/events streams Server-Sent Events, /users/upload takes a body of any size
//   orders  one instance, faulty on purpose on a few paths (see `faultyOrders`)
//   billing a pool whose only target is a port where nothing listens
//   reports one instance that answers every request, correctly, after 2.5 s: slow, not broken,
//           which the status page's diagnosis points out
//   catalog one instance whose answers may be cached (its route caches them); /catalog/outage
//           stops it for a while, to see the last good answer served instead of an error
//
// Logs are Fastify's plain JSON lines (pipe through `pino-pretty` if you have it); the
// upstreams print one `[upstream …]` line each on stderr, with the request id the gateway
// sent them, so a gateway log line and an upstream log line can be matched.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import upstream, { frameworkErrors, clientErrorHandler, requestIdFrom } from 'fastify-upstream'
import { startUpstream, freePort, sendJson, type Upstream } from './lib/upstream.js'
import { serve } from './lib/gateway.js'

/** The orders route's `timeouts.headers`: /orders/slow answers well after it. */
const ORDERS_HEADERS_TIMEOUT = 1000
const SLOW_ANSWER_MS = 5000
/** Every answer of the reports service: slow enough for the diagnosis (over 2 s on average). */
const REPORTS_ANSWER_MS = 2500

/**
 * The orders service, which sees the whole path (its route keeps the prefix):
 * - /orders/slow     answers after 5 s, past the route's 1 s `timeouts.headers`
 * - /orders/crash    closes the connection without answering (a crash mid-request)
 * - /orders/garbage  answers with bytes that are not HTTP (a port that is not a web server)
 * - /orders/partial  promises 1000 bytes, sends a few, then dies
 * - /orders/oops     its own 500, which the gateway passes through as it is
 * - anything else    a normal JSON answer
 */
function faultyOrders (req: IncomingMessage, res: ServerResponse, name: string): boolean {
  const path = (req.url ?? '/').split('?')[0]
  switch (path) {
    case '/orders/slow': {
      const timer = setTimeout(() => { sendJson(res, 200, { instance: name, slow: true, ms: SLOW_ANSWER_MS }) }, SLOW_ANSWER_MS)
      // The gateway gives up first and drops the connection: stop waiting with it.
      res.once('close', () => { clearTimeout(timer) })
      return true
    }
    case '/orders/crash':
      req.socket.destroy()
      return true
    case '/orders/garbage':
      req.socket.end("-ERR unknown command 'GET', with args beginning with: '/orders/garbage'\r\n")
      return true
    case '/orders/partial':
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 1000 })
      res.write('{"orders":[{"id":1},')
      setTimeout(() => { res.destroy() }, 50)
      return true
    case '/orders/oops':
      sendJson(res, 500, { error: 'orders database is read-only', instance: name })
      return true
    default:
      return false
  }
}

/**
 * The users service's long-lived and large traffic:
 * - /events   Server-Sent Events: one event a second, five in all
 * - /upload   counts the bytes of whatever body it gets
 */
function usersTraffic (req: IncomingMessage, res: ServerResponse, name: string): boolean {
  const path = (req.url ?? '/').split('?')[0]
  if (path === '/events') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.flushHeaders()
    let n = 0
    const timer = setInterval(() => {
      n++
      res.write(`data: {"instance":"${name}","event":${n}}\n\n`)
      if (n === 5) {
        clearInterval(timer)
        res.end()
      }
    }, 1000)
    res.once('close', () => { clearInterval(timer) })
    return true
  }
  if (path === '/upload') {
    let bytes = 0
    req.on('data', (chunk: Buffer) => { bytes += chunk.length })
    req.on('end', () => { sendJson(res, 200, { instance: name, received: bytes }) })
    return true
  }
  return false
}

/** The reports service: every answer is right, and 2.5 s late. */
function slowReports (req: IncomingMessage, res: ServerResponse, name: string): boolean {
  const timer = setTimeout(() => { sendJson(res, 200, { instance: name, path: req.url, ms: REPORTS_ANSWER_MS }) }, REPORTS_ANSWER_MS)
  res.once('close', () => { clearTimeout(timer) })
  return true
}

/** How long /catalog/outage keeps the catalog service down. */
const CATALOG_OUTAGE_MS = 30_000

/**
 * The catalog service: product lists a shared cache may keep for 10 s, and stand in with for
 * ten minutes if the service fails (`stale-if-error`). /catalog/outage stops it listening for
 * CATALOG_OUTAGE_MS (said in an answer nobody may store), then it comes back on the same port.
 */
async function startCatalog (): Promise<Upstream> {
  let served = 0
  let restart: NodeJS.Timeout | null = null
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    process.stderr.write(`[upstream catalog-1] ${req.method ?? '?'} ${req.url ?? '/'} x-request-id=${String(req.headers['x-request-id'] ?? '-')}\n`)
    if (path === '/catalog/outage') {
      res.setHeader('cache-control', 'no-store')
      sendJson(res, 200, { instance: 'catalog-1', stopping: true, forMs: CATALOG_OUTAGE_MS })
      // Stops listening once this answer is out, and starts again later on the same port.
      res.once('finish', () => {
        server.close()
        server.closeAllConnections()
        restart = setTimeout(() => { restart = null; server.listen(port, '127.0.0.1') }, CATALOG_OUTAGE_MS)
      })
      return
    }
    served++
    res.setHeader('cache-control', 'max-age=10, stale-if-error=600')
    sendJson(res, 200, { instance: 'catalog-1', products: ['tea', 'coffee', 'cocoa'], servedByTheService: served, at: new Date().toISOString() })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    name: 'catalog-1',
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      if (restart !== null) clearTimeout(restart)
      if (!server.listening) return
      const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
      server.closeAllConnections()
      await closed
    }
  }
}

const usersA = await startUpstream('users-a', { log: true, handler: usersTraffic })
const usersB = await startUpstream('users-b', { log: true, handler: usersTraffic })
const orders = await startUpstream('orders-1', { log: true, handler: faultyOrders })
const reports = await startUpstream('reports-1', { log: true, handler: slowReports })
const catalog = await startCatalog()
const billingUrl = `http://127.0.0.1:${await freePort()}`

// `requestIdFrom` lets a caller pass its own id (curl -H 'x-request-id: …') when it is
// well-formed, and generates one otherwise. `frameworkErrors` and `clientErrorHandler` make the
// errors Fastify and Node answer before any route (a URL that cannot be decoded, oversized
// headers) speak the gateway's format too.
const app = Fastify({ logger: true, genReqId: requestIdFrom('x-request-id'), frameworkErrors, clientErrorHandler })
await app.register(upstream, {
  pools: {
    users: { targets: [usersA.url, usersB.url] },
    // Faulty on purpose on five paths, one after the other in the tour below: with the default
    // outlier.consecutiveFailures (5), the retried crash would get its only target ejected and
    // the next lines a 503 for a second. A lenient setting keeps it in rotation, shown failing.
    orders: { targets: [orders.url], outlier: { consecutiveFailures: 10 } },
    billing: { targets: [billingUrl] },
    reports: { targets: [reports.url] },
    catalog: { targets: [catalog.url] }
  },
  routes: [
    { prefix: '/users', pool: 'users' },
    { prefix: '/orders', pool: 'orders', rewritePrefix: '/orders', timeouts: { headers: ORDERS_HEADERS_TIMEOUT } },
    { prefix: '/billing', pool: 'billing' },
    { prefix: '/reports', pool: 'reports' },
    // The catalog's answers are kept as their Cache-Control allows (10 s fresh, stale-if-error
    // for 10 min): a hit costs the service nothing, and an outage costs its visitors nothing.
    { prefix: '/catalog', pool: 'catalog', rewritePrefix: '/catalog', cache: true }
  ],
  // A demo sees a handful of requests, not a production pool's hundreds: let the diagnosis
  // judge a pool from 3 requests (20 by default).
  status: { diagnosis: { minRequests: 3 } }
})

await serve(app, {
  upstreams: [usersA, usersB, orders, reports, catalog],
  banner: [
    'fastify-upstream demo: a gateway at $GW in front of',
    `  users    ${usersA.url} (${usersA.name}), ${usersB.url} (${usersB.name}): round-robin, healthy`,
    `  orders   ${orders.url} (${orders.name}): faulty on purpose; its route has timeouts.headers = ${ORDERS_HEADERS_TIMEOUT} ms`,
    `  billing  ${billingUrl}: nothing listens there`,
    `  reports  ${reports.url} (${reports.name}): answers everything, ${REPORTS_ANSWER_MS} ms late`,
    `  catalog  ${catalog.url} (${catalog.name}): cacheable answers; its route caches them (routes[].cache)`,
    '',
    'Each failed request writes one log line (level 50): error, blame, phase, pool, target, cause, attempts, ms.',
    '',
    'Status page: $GW/_upstream  (open it in a browser: pools, targets, recent errors with their stories, a diagnosis in words)',
    'Metrics:     $GW/metrics'
  ],
  tries: [
    ['curl -s $GW/users/42', 'run it twice: users-a, then users-b'],
    ['curl -N $GW/users/events', 'SSE: the headers at once, then an event a second, as the service sends them'],
    ['head -c 50000000 /dev/zero | curl -s --data-binary @- $GW/users/upload', 'a 50 MB upload streams through: no size limit by default'],
    ['curl -s $GW/orders/7', 'orders works... on most paths'],
    ['curl -i $GW/orders/slow', '504 http_response_timeout: no headers in time; see Proxy-Status'],
    ["curl -s -H 'accept: application/json' $GW/orders/crash", '502 connection_terminated, as problem+json'],
    ['curl -s $GW/orders/garbage', '502 http_protocol_error: the answer is not HTTP at all'],
    ['curl -s $GW/orders/partial', 'the answer had started: the client connection is cut, the log says why'],
    ['curl -i $GW/orders/oops', "the service's own 500 passes through; Proxy-Status says received-status=500"],
    ["curl -i -H 'accept: application/json' $GW/billing/invoices", '502 connection_refused'],
    ['for r in daily weekly monthly; do curl -s $GW/reports/$r & done; wait', `three slow answers at once (${REPORTS_ANSWER_MS / 1000} s each): then see the diagnosis`],
    ['curl -s $GW/catalog/products', 'cacheable: the service answers, and the gateway keeps the answer'],
    ['curl -i $GW/catalog/products', 'again: Cache-Status: fastify-upstream; hit, with Age; the service saw nothing'],
    ['curl -s $GW/catalog/outage', `stops the catalog service for ${CATALOG_OUTAGE_MS / 1000} s`],
    ["curl -i -H 'cache-control: max-age=0' $GW/catalog/products", 'asks past the cache: the service is down, so the last good answer comes, marked stale-if-error, Proxy-Status naming the failure'],
    ["curl -s -H 'accept: application/json' $GW/_upstream", 'the status report: every pool and target, rates, percentiles, and what is wrong in words'],
    ["curl -s -H 'x-request-id: my-id-1' $GW/orders/crash", "your id: in the answer, the gateway's log line and the upstream's"],
    ["curl -i -H \"cookie: $(head -c 20000 /dev/zero | tr '\\0' a)\" $GW/users/1", '431: headers too large, said in the gateway\'s words']
  ]
})
