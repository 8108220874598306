import t from 'tap'
import http from 'node:http'
import { PathMapper, checkPath } from '../lib/proxy/path.js'
import { UnsafePathError } from '../lib/errors/codes.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'
import { ourProxyStatus } from './helpers/proxy-status.js'

const strict = { caseSensitive: true, ignoreDuplicateSlashes: false }

t.test('the prefix becomes rewritePrefix; the rest and the query pass as sent', async (t) => {
  const cases: Array<[prefix: string, rewritePrefix: string, url: string, upstream: string]> = [
    ['/users', '', '/users/7?x=1', '/7?x=1'],
    ['/users', '', '/users', '/'],
    ['/users', '', '/users/', '/'],
    ['/users', '', '/users?x=1', '/?x=1'],
    ['/users', '/v2', '/users/7', '/v2/7'],
    ['/users', '/v2', '/users', '/v2'],
    ['/users', '/v2/', '/users/7', '/v2/7'],
    ['/users/', '/v2/', '/users/7', '/v2/7'],
    ['/', '', '/x/y?z', '/x/y?z'],
    ['/', '/app', '/x', '/app/x'],
    ['/a/b', '/c', '/a/b/d', '/c/d'],
    // Not decoded, re-encoded or reordered: what the client sent is what the upstream reads.
    ['/q', '', '/q/a?b=%20c&b=2&flag&e=%7E&e=~&x=a+b', '/a?b=%20c&b=2&flag&e=%7E&e=~&x=a+b'],
    ['/q', '', '/q/caf%C3%A9/%2Fslash?', '/caf%C3%A9/%2Fslash?'],
    ['/q', '', '/q/.well-known/x', '/.well-known/x'],
    ['/q', '', '/q/a..b/c.', '/a..b/c.'],
    ['/q', '', '/q/%252e%252e/x', '/%252e%252e/x']
  ]
  for (const [prefix, rewritePrefix, url, upstream] of cases) {
    t.equal(new PathMapper(prefix, rewritePrefix, strict).map(url), upstream, `${prefix} → ${JSON.stringify(rewritePrefix)}: ${url}`)
  }
})

t.test('a prefix the router matched in another spelling still maps', async (t) => {
  const mapper = new PathMapper('/users', '/v2', strict)
  t.equal(mapper.map('/%75sers/7?x'), '/v2/7?x', 'escaped')
  t.equal(mapper.map('/us%65rs'), '/v2', 'escaped, nothing after')
  const insensitive = new PathMapper('/users', '/v2', { caseSensitive: false, ignoreDuplicateSlashes: false })
  t.equal(insensitive.map('/USERS/7'), '/v2/7', 'in other case, with caseSensitive: false')
  const collapsing = new PathMapper('/a/b', '/v2', { caseSensitive: true, ignoreDuplicateSlashes: true })
  t.equal(collapsing.map('/a//b/c'), '/v2/c', 'doubled slashes, with ignoreDuplicateSlashes')
  t.throws(() => mapper.map('/other/7'), { statusCode: 400, code: 'FST_UPSTREAM_UNSAFE_PATH' }, 'a path outside the prefix is refused, not guessed at')
})

t.test('paths that could climb out of rewritePrefix are refused', async (t) => {
  const refused = [
    '/v1/../admin', '/v1/x/../../admin', '/v1/%2e%2e/admin', '/v1/%2E%2E', '/v1/..%2fadmin', '/v1/..%5cadmin',
    '/v1/..\\admin', '/v1/x/..;/admin', '/v1/..;jsessionid=1/x', '/v1/%c0%ae%c0%ae/admin', '/v1/%', '/v1/%zz',
    '//evil.example/x', '/%2fevil.example', '/\\evil.example', '/..?x'
  ]
  for (const path of refused) t.throws(() => { checkPath(path) }, { statusCode: 400, code: 'FST_UPSTREAM_UNSAFE_PATH' }, path)
  const passed = ['/', '/v1', '/v1/a/b', '/v1/a.b/..c/c..', '/v1/./x', '/v1//x', '/v1/%41?x=../..', '/v1/a?q=%2e%2e/..']
  for (const path of passed) t.doesNotThrow(() => { checkPath(path) }, path)
  t.equal(new UnsafePathError('x').statusCode, 400)
})

t.test('through a gateway: the upstream reads the path and query as sent; unsafe ones get 400 in the gateway format', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix: '/api', pool: 'p', rewritePrefix: '/v1' }] })
  const echo = await (await gw.request('/api/a%2Fb/caf%C3%A9?b=%20c&b=2&flag&x=a+b')).body.json() as { url: string }
  t.equal(echo.url, '/v1/a%2Fb/caf%C3%A9?b=%20c&b=2&flag&x=a+b')
  // node:http sends the path as given (a WHATWG URL would resolve the dots first).
  const res = await new Promise<{ status: number, proxyStatus: string, body: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: new URL(gw.url).port, path: '/api/%2e%2e/admin', headers: { accept: 'application/json' } }, (answer) => {
      let body = ''
      answer.on('data', (chunk: Buffer) => { body += chunk.toString() })
      answer.on('end', () => { resolve({ status: answer.statusCode!, proxyStatus: String(answer.headers['proxy-status']), body }) })
    }).on('error', reject)
  })
  t.equal(res.status, 400)
  t.match(ourProxyStatus(res.proxyStatus), { proxy: 'fastify-upstream', params: { error: 'http_request_error' } })
  t.match(JSON.parse(res.body), { status: 400, error: 'http_request_error' })
  t.equal(u.hits, 1, 'only the first request reached the upstream')
})

t.test('a route prefix must be a literal path', async (t) => {
  const u = await startUpstream('u')
  t.teardown(u.close)
  for (const prefix of ['/api/:version', '/files/*', '/a?b']) {
    await t.rejects(startGateway(t, { pools: { p: { targets: [u.url] } }, routes: [{ prefix, pool: 'p' }] }), { message: /routes\[0\]\.prefix/ }, prefix)
  }
})
