// lib/proxy/continue.ts without a socket: which declared bodies get no 100 Continue.
import t from 'tap'
import { bodyLimits, overLimit } from '../../lib/proxy/continue.js'

const limits = bodyLimits([
  { prefix: '/api', bodyLimit: 1000 },
  { prefix: '/open', bodyLimit: null },
  { prefix: '/api/uploads/', bodyLimit: 50_000 },
  { prefix: '/api/uploads/tiny', bodyLimit: 10 }
])
const req = (url: string | undefined, length?: string): { url: string | undefined, headers: Record<string, string> } =>
  ({ url, headers: length === undefined ? {} : { 'content-length': length } })

t.test('bodyLimits: routes with a limit, the longest prefix first', async (t) => {
  t.same(limits, [
    { prefix: '/api/uploads/tiny', bodyLimit: 10 },
    { prefix: '/api/uploads/', bodyLimit: 50_000 },
    { prefix: '/api', bodyLimit: 1000 }
  ])
})

t.test('overLimit: strictly more than the limit of the most specific route', async (t) => {
  t.equal(overLimit(req('/api/x', '1000'), limits), false, 'exactly at the limit is allowed')
  t.equal(overLimit(req('/api/x', '1001'), limits), true)
  t.equal(overLimit(req('/api', '1001'), limits), true, 'the prefix itself')
  t.equal(overLimit(req('/apix', '1001'), limits), false, 'whole segments only')
  t.equal(overLimit(req('/api/uploads/big', '2000'), limits), false, 'the uploads route allows more than /api')
  t.equal(overLimit(req('/api/uploads/big', '50001'), limits), true)
  t.equal(overLimit(req('/api/uploads', '2000'), limits), false, 'a prefix with a trailing slash covers the path without it')
  t.equal(overLimit(req('/api/uploads/tiny', '11'), limits), true, 'the nested, stricter prefix wins')
  t.equal(overLimit(req('/api/uploads/tiny/a?x=1', '11'), limits), true)
  t.equal(overLimit(req('/api/x?big=1', '1001'), limits), true, 'the query is not part of the path')
  t.equal(overLimit(req('/api/x?/api/uploads/', '2000'), limits), true, 'nor does a path in the query count')
  t.equal(overLimit(req('/open/x', '99999999'), limits), false, 'a route without a limit')
  t.equal(overLimit(req('/api/x'), limits), false, 'no Content-Length: nothing declared')
  t.equal(overLimit(req('/api/x', 'lots'), limits), false, 'an unreadable Content-Length is left to the parser')
  t.equal(overLimit(req(undefined, '5'), bodyLimits([{ prefix: '/', bodyLimit: 4 }])), true, 'no url reads as /')
})
