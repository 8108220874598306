// lib/proxy/path.ts without a socket: prefix rewriting and the paths that are refused.
import t from 'tap'
import { checkPath, PathMapper } from '../../lib/proxy/path.js'
import type { UnsafePathError } from '../../lib/errors/codes.js'

const UNSAFE = { code: 'FST_UPSTREAM_UNSAFE_PATH' }
const strict = { caseSensitive: true, ignoreDuplicateSlashes: false }
const loose = { caseSensitive: false, ignoreDuplicateSlashes: true }

t.test('map: the prefix swapped for rewritePrefix, the rest byte for byte', async (t) => {
  const m = new PathMapper('/api', '/v2', strict)
  t.equal(m.map('/api/x'), '/v2/x')
  t.equal(m.map('/api'), '/v2')
  t.equal(m.map('/api?q=1'), '/v2?q=1')
  t.equal(m.map('/api/a%2Fb?x=a+b'), '/v2/a%2Fb?x=a+b')
  t.equal(new PathMapper('/api/', '/v2/', strict).map('/api/x'), '/v2/x', 'trailing slashes alike')
  t.equal(new PathMapper('/api', '', strict).map('/api'), '/', 'an empty result is /')
  t.equal(new PathMapper('/api', '', strict).map('/api?q'), '/?q', 'a bare query gets its /')
  t.equal(new PathMapper('/api', '/', strict).map('/api/x'), '/x')
  t.equal(new PathMapper('/', '/v1', strict).map('/x'), '/v1/x')
})

t.test('map: a prefix spelled another way the router accepts', async (t) => {
  t.equal(new PathMapper('/api', '/v2', strict).map('/%61pi/x'), '/v2/x', 'escaped')
  t.equal(new PathMapper('/api', '/v2', loose).map('/API/x'), '/v2/x', 'other case')
  t.equal(new PathMapper('/api/v1', '/v2', loose).map('//api//v1/x'), '/v2/x', 'doubled slashes')
  t.equal(new PathMapper('/api', '/v2', strict).map('/%61pi?q=1'), '/v2?q=1')
  t.throws(() => new PathMapper('/api', '/v2', strict).map('/API/x'), UNSAFE, 'case matters when the router says so')
  t.throws(() => new PathMapper('/api', '/v2', strict).map('/apix'), { message: /does not start with the route's prefix "\/api"/ })
  t.throws(() => new PathMapper('/api', '/v2', strict).map('/%E0%A4%A/x'), UNSAFE, 'an escape that does not decode')
  t.throws(() => new PathMapper('/api', '/v2', strict).map('/other?/api'), UNSAFE, 'the query is not searched')
})

t.test('checkPath: climbing out is refused, in every spelling', async (t) => {
  for (const path of ['/a/../b', '/..', '/a/%2e%2e/b', '/a/%2E%2E', '/a/..%2fb', '/a\\..\\b', '/a/..;x/b', '//evil.example/x', '/%2F/evil', '/a/%c0%ae%c0%ae/b', '/%zz']) {
    t.throws(() => { checkPath(path) }, UNSAFE, path)
  }
  for (const path of ['/', '/a/b', '/a..b/c', '/a/...', '/a/.b', '/a%20b', '/a?x=/../y', '/a?//x', '/a/b;c', '/%2e']) {
    t.doesNotThrow(() => { checkPath(path) }, path)
  }
  const error = (() => { try { checkPath('/a/../b') } catch (e) { return e } })() as UnsafePathError
  t.equal(error.code, 'FST_UPSTREAM_UNSAFE_PATH')
  t.equal(error.statusCode, 400)
  t.equal(error.message, 'the path has a ".." segment, which could climb out of the route\'s rewritePrefix upstream')
  t.throws(() => { checkPath('//x') }, { message: 'the path starts with "//"' })
  t.throws(() => { checkPath('/%2Fx') }, { message: 'the path starts with "//" once decoded' })
  t.throws(() => { checkPath('/%zz') }, { message: 'the path has a percent-escape that does not decode' })
})
