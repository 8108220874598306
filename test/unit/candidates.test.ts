// lib/proxy/candidates.ts without a socket: the order a request tries targets in, on a fake pool.
import t from 'tap'
import type { FastifyRequest } from 'fastify'
import { Candidates } from '../../lib/proxy/candidates.js'
import type { UpstreamPool } from '../../lib/pool/pool.js'
import type { Target } from '../../lib/pool/target.js'

interface FakeTarget { name: string, available: boolean, removed: boolean, room: boolean, isAvailable: () => boolean }
const target = (name: string, over: Partial<FakeTarget> = {}): FakeTarget => {
  const t: FakeTarget = { name, available: true, removed: false, room: true, isAvailable: () => t.available, ...over }
  return t
}
interface Fake { list: FakeTarget[], trial: FakeTarget | null, inPanic: boolean }
const candidates = (fake: Fake): Candidates => {
  const pool = {
    candidates: () => fake.list,
    isTrial: (x: FakeTarget) => x === fake.trial,
    hasRoom: (x: FakeTarget) => x.room,
    get inPanic () { return fake.inPanic }
  }
  return new Candidates(pool as unknown as UpstreamPool, {} as FastifyRequest)
}
const name = (picked: Target | 'none' | 'full'): string => typeof picked === 'string' ? picked : (picked as unknown as FakeTarget).name

t.test('picks in the balancer\'s order, each retry the next target, round and round', async (t) => {
  const c = candidates({ list: [target('a'), target('b'), target('c')], trial: null, inPanic: false })
  t.equal(c.empty, false)
  t.same([c.pick(), c.pick(), c.pick(), c.pick()].map(name), ['a', 'b', 'c', 'a'])
})

t.test('an empty list: none, and empty', async (t) => {
  const c = candidates({ list: [], trial: null, inPanic: false })
  t.equal(c.empty, true)
  t.equal(c.pick(), 'none')
  t.equal(c.hasAnother(), false)
})

t.test('unreachable targets are skipped for the rest of the request', async (t) => {
  const a = target('a')
  const c = candidates({ list: [a, target('b')], trial: null, inPanic: false })
  t.equal(name(c.pick()), 'a')
  c.unreachable(a as unknown as Target)
  t.same([c.pick(), c.pick()].map(name), ['b', 'b'])
  t.equal(c.hasAnother(), true)
  const only = candidates({ list: [a], trial: null, inPanic: false })
  only.unreachable(a as unknown as Target)
  t.equal(only.pick(), 'none')
  t.equal(only.hasAnother(), false)
})

t.test('targets that went out or were removed are skipped; full when those left have no room', async (t) => {
  const a = target('a')
  const b = target('b')
  const c = candidates({ list: [a, b], trial: null, inPanic: false })
  a.available = false
  t.equal(name(c.pick()), 'b')
  b.room = false
  t.equal(c.pick(), 'full', 'b may take traffic but has no room: wait in line')
  b.removed = true
  t.equal(c.pick(), 'none')
  t.equal(c.hasAnother(), false)
})

t.test('full is only said when some target may take traffic; room is looked for past the full ones', async (t) => {
  const c = candidates({ list: [target('a', { room: false }), target('b', { available: false }), target('c')], trial: null, inPanic: false })
  t.equal(name(c.pick()), 'c')
  t.equal(name(c.pick()), 'c', 'the next after c wraps round to a (full), b (out), then c')
})

t.test('in panic every target may be tried, removed ones still not', async (t) => {
  const fake: Fake = { list: [target('a', { available: false }), target('b', { available: false, removed: true })], trial: null, inPanic: true }
  const c = candidates(fake)
  t.same([c.pick(), c.pick()].map(name), ['a', 'a'])
  fake.inPanic = false
  t.equal(c.pick(), 'none')
})

t.test('the half-open trial: one try, for the request the pool handed it to', async (t) => {
  const ejected = target('e', { available: false })
  const fake: Fake = { list: [ejected], trial: ejected, inPanic: false }
  const c = candidates(fake)
  t.equal(c.hasAnother(), true)
  t.equal(name(c.pick()), 'e')
  t.equal(c.pick(), 'none', 'a failed trial is not tried again at once')
  t.equal(c.hasAnother(), false)

  const twoListed = candidates({ list: [ejected, target('b', { available: false })], trial: ejected, inPanic: false })
  t.equal(twoListed.pick(), 'none', 'a request that listed more than the trial target is not the trial')

  const later = candidates(fake)
  fake.trial = null
  t.equal(later.pick(), 'none', 'the trial passed to another request since the list was made')
})
