// lib/proxy/location.ts without a socket: which Location values are rewritten, and to what.
import t from 'tap'
import { rewriteLocation, rewriteLocations, type LocationContext } from '../../lib/proxy/location.js'
import type { FastifyRequest } from 'fastify'
import type { RouteConfig } from '../../lib/options/config.js'
import type { UpstreamPool } from '../../lib/pool/pool.js'

const context: LocationContext = {
  origins: new Set(['http://10.0.0.7:3001']),
  prefix: '/shop',
  rewritePrefix: '/v1',
  clientOrigin: 'https://gw.example'
}

t.test('rewriteLocation: a target\'s URL under rewritePrefix becomes the client\'s', async (t) => {
  t.equal(rewriteLocation('http://10.0.0.7:3001/v1/cart?x=1#top', context), 'https://gw.example/shop/cart?x=1#top')
  t.equal(rewriteLocation('http://10.0.0.7:3001/v1', context), 'https://gw.example/shop')
  t.equal(rewriteLocation('http://10.0.0.7:3001/v1?x', context), 'https://gw.example/shop?x')
  t.equal(rewriteLocation('http://10.0.0.7:3001/v1#a', context), 'https://gw.example/shop#a')
  t.equal(rewriteLocation('http://10.0.0.7:3001/v1/x', { ...context, clientOrigin: null }), '/shop/x', 'no Host: a path-absolute reference')
  t.equal(rewriteLocation('/v1/cart', context), '/shop/cart', 'path-absolute')
})

t.test('rewriteLocation: anything else passes untouched', async (t) => {
  for (const value of ['http://10.0.0.7:3001/v10/x', 'http://10.0.0.7:3001/other', 'http://elsewhere.example/v1/x', 'https://10.0.0.7:3001/v1/x',
    '//10.0.0.7:3001/v1/x', 'next', '../up', '/v10', '/other', 'http://[bad', '']) {
    t.equal(rewriteLocation(value, context), value, JSON.stringify(value))
  }
})

t.test('rewriteLocation: slashes at the ends of the prefixes', async (t) => {
  t.equal(rewriteLocation('/v1/x', { ...context, prefix: '/shop/', rewritePrefix: '/v1/' }), '/shop/x')
  t.equal(rewriteLocation('/x', { ...context, prefix: '/shop', rewritePrefix: '' }), '/shop/x', 'an empty rewritePrefix covers every path')
  t.equal(rewriteLocation('/x', { ...context, prefix: '/shop', rewritePrefix: '/' }), '/shop/x')
  t.equal(rewriteLocation('/v1', { ...context, prefix: '/', rewritePrefix: '/v1' }), '/', 'an empty result is /')
  t.equal(rewriteLocation('/v1?q', { ...context, prefix: '/', rewritePrefix: '/v1' }), '/?q')
  t.equal(rewriteLocation('/v1#f', { ...context, prefix: '', rewritePrefix: '/v1' }), '/#f')
  t.equal(rewriteLocation('//evil.example/x', { ...context, rewritePrefix: '' }), '//evil.example/x', 'a protocol-relative URL is another site, even under an empty rewritePrefix')
})

t.test('rewriteLocations: both fields, only when the route says so', async (t) => {
  const pool = { origins: context.origins } as unknown as UpstreamPool
  const route = { rewriteLocation: true, prefix: '/shop', rewritePrefix: '/v1' } as unknown as RouteConfig
  const request = (host: string): FastifyRequest => ({ host, protocol: 'https' }) as unknown as FastifyRequest
  const headers: Record<string, unknown> = { location: 'http://10.0.0.7:3001/v1/a', 'content-location': '/v1/b', other: '/v1/c' }
  rewriteLocations(headers, request('gw.example'), route, pool)
  t.same(headers, { location: 'https://gw.example/shop/a', 'content-location': '/shop/b', other: '/v1/c' })

  const onlyContent: Record<string, unknown> = { 'content-location': 'http://10.0.0.7:3001/v1/b' }
  rewriteLocations(onlyContent, request(''), route, pool)
  t.same(onlyContent, { 'content-location': '/shop/b' }, 'no Host: path-absolute; no Location field added')

  const off: Record<string, unknown> = { location: '/v1/a' }
  rewriteLocations(off, request('gw.example'), { ...route, rewriteLocation: false }, pool)
  t.same(off, { location: '/v1/a' }, 'rewriteLocation off')

  const none: Record<string, unknown> = { location: ['/v1/a'] }
  rewriteLocations(none, request('gw.example'), route, pool)
  t.same(none, { location: ['/v1/a'] }, 'a value that is not one string is left alone')
})
