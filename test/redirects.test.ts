// Location and Content-Location through the gateway (routes[].rewriteLocation).
import t from 'tap'
import net from 'node:net'
import { rewriteLocation, type LocationContext } from '../lib/proxy/location.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/servers.js'

t.test('rewriteLocation maps target addresses and rewritePrefix back to the client\'s view', async (t) => {
  const base: LocationContext = { origins: new Set(['http://10.0.0.7:3001']), prefix: '/api', rewritePrefix: '/v1', clientOrigin: 'https://gw.example' }
  const cases: Array<[string, string, Partial<LocationContext>?]> = [
    ['http://10.0.0.7:3001/v1/login?next=%2F#top', 'https://gw.example/api/login?next=%2F#top'],
    ['http://10.0.0.7:3001/v1', 'https://gw.example/api'],
    ['/v1/users/7', '/api/users/7'],
    ['/v1?page=2', '/api?page=2'],
    ['/v10/x', '/v10/x'],
    ['/elsewhere', '/elsewhere'],
    ['http://10.0.0.7:3001/elsewhere', 'http://10.0.0.7:3001/elsewhere'],
    ['http://10.0.0.8:3001/v1/x', 'http://10.0.0.8:3001/v1/x'],
    ['https://example.com/v1/x', 'https://example.com/v1/x'],
    ['//example.com/v1/x', '//example.com/v1/x'],
    ['next', 'next'],
    ['../up', '../up'],
    ['http://[::1', 'http://[::1'],
    ['/login', '/api/login', { rewritePrefix: '' }],
    ['/', '/api/', { rewritePrefix: '' }],
    ['/login', '/login', { prefix: '/', rewritePrefix: '' }],
    ['/v1', '/', { prefix: '/' }],
    ['/v1/a', '/api/a', { rewritePrefix: '/v1/' }],
    ['http://10.0.0.7:3001/v1/a', '/api/a', { clientOrigin: null }]
  ]
  for (const [value, expected, change] of cases) {
    t.equal(rewriteLocation(value, { ...base, ...change }), expected, `${value}${change !== undefined ? ` with ${JSON.stringify(change)}` : ''}`)
  }
})

/** An upstream that redirects to whatever `?to=` says, with the same Content-Location. */
async function redirector (): Promise<Awaited<ReturnType<typeof startUpstream>>> {
  return await startUpstream('redirector', (req, res) => {
    const to = new URL(req.url ?? '/', 'http://x').searchParams.get('to') ?? '/'
    res.writeHead(302, { location: to.replace('SELF', `http://${req.headers.host ?? ''}`), 'content-location': to.replace('SELF', `http://${req.headers.host ?? ''}`) })
    res.end()
  })
}

t.test('redirects from the upstream point back through the gateway', async (t) => {
  const u = await redirector()
  t.teardown(u.close)
  const gw = await startGateway(t, {
    pools: { app: { targets: [u.url] } },
    routes: [{ prefix: '/f', pool: 'app' }, { prefix: '/api', pool: 'app', rewritePrefix: '/v1' }, { prefix: '/raw', pool: 'app', rewriteLocation: false }]
  })
  const host = new URL(gw.url).host
  const location = async (path: string): Promise<[unknown, unknown]> => {
    const res = await gw.request(path)
    await res.body.dump()
    t.equal(res.statusCode, 302)
    return [res.headers.location, res.headers['content-location']]
  }
  t.same(await location('/f/x?to=SELF/x'), [`http://${host}/f/x`, `http://${host}/f/x`], 'an absolute URL at the target: the client\'s address, not the internal one')
  t.same(await location('/f/x?to=/login'), ['/f/login', '/f/login'], 'a path-absolute one gets the prefix')
  t.same(await location('/f/x?to=https://example.com/y'), ['https://example.com/y', 'https://example.com/y'], 'another site passes untouched')
  t.same(await location('/api/x?to=/v1/login'), ['/api/login', '/api/login'], 'rewritePrefix maps back to prefix')
  t.same(await location('/api/x?to=SELF/v1/a'), [`http://${host}/api/a`, `http://${host}/api/a`])
  t.same(await location('/api/x?to=/static/a.css'), ['/static/a.css', '/static/a.css'], 'a path outside rewritePrefix passes untouched')
  t.same(await location('/raw/x?to=SELF/x'), [`${u.url}/x`, `${u.url}/x`], 'rewriteLocation: false passes every value untouched')
  t.same(await location('/raw/x?to=/login'), ['/login', '/login'])
})

t.test('with trustProxy, the address is the one the first client used', async (t) => {
  const u = await redirector()
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { app: { targets: [u.url] } }, routes: [{ prefix: '/f', pool: 'app' }] }, { trustProxy: true })
  const res = await gw.request('/f/x?to=SELF/done', { headers: { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example' } })
  await res.body.dump()
  t.equal(res.headers.location, 'https://shop.example/f/done')
})

t.test('an HTTP/1.0 client without Host gets a path-absolute Location', async (t) => {
  const u = await redirector()
  t.teardown(u.close)
  const gw = await startGateway(t, { pools: { app: { targets: [u.url] } }, routes: [{ prefix: '/f', pool: 'app' }] })
  const { port } = new URL(gw.url)
  const head = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /f/x?to=SELF/done HTTP/1.0\r\n\r\n'))
    let text = ''
    socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
    socket.on('end', () => resolve(/\r\nlocation: ([^\r]*)/i.exec(text)?.[1] ?? text))
    socket.on('error', reject)
  })
  t.equal(head, '/f/done')
})
