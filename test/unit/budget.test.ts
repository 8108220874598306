// lib/pool/budget.ts without a socket: the retry budget over a sliding second, on a fake clock.
import t from 'tap'
import { RetryBudget } from '../../lib/pool/budget.js'

const clock = (): { now: () => number, at: number } => {
  const c = { at: 1_000_000, now: () => c.at }
  return c
}

t.test('minPerSecond retries are allowed with no traffic at all, then none', async (t) => {
  const c = clock()
  const budget = new RetryBudget(0.2, 3, c.now)
  t.same([1, 2, 3, 4].map(() => budget.tryRetry()), [true, true, true, false])
})

t.test('ratio of the requests in the last second, when that is above the floor', async (t) => {
  const c = clock()
  const budget = new RetryBudget(0.5, 1, c.now)
  for (let i = 0; i < 10; i++) budget.request()
  t.same(Array.from({ length: 6 }, () => budget.tryRetry()), [true, true, true, true, true, false], 'half of 10')
})

t.test('the window slides: spent retries come back after a second, recent ones stay counted', async (t) => {
  const c = clock()
  const budget = new RetryBudget(0, 2, c.now)
  t.equal(budget.tryRetry(), true)
  c.at += 500
  t.equal(budget.tryRetry(), true)
  t.equal(budget.tryRetry(), false, 'two in this second')
  c.at += 550
  t.equal(budget.tryRetry(), true, 'the first has left the window (1050 ms ago)')
  t.equal(budget.tryRetry(), false, 'the second (550 ms ago) is still in it')
  c.at += 5000
  t.same([budget.tryRetry(), budget.tryRetry(), budget.tryRetry()], [true, true, false], 'a long pause clears every slice')
})

t.test('requests leave the window too', async (t) => {
  const c = clock()
  const budget = new RetryBudget(1, 0, c.now)
  budget.request()
  budget.request()
  c.at += 99
  t.equal(budget.tryRetry(), true, 'same slice')
  c.at += 1000
  t.equal(budget.tryRetry(), false, 'the requests are more than a second old')
})

t.test('a slice is 100 ms: a retry 99 ms later shares it, 100 ms later does not', async (t) => {
  const c = clock()
  const budget = new RetryBudget(0, 1, c.now)
  t.equal(budget.tryRetry(), true)
  c.at += 999
  t.equal(budget.tryRetry(), false, 'still within the second (the slice began at the first retry)')
  c.at += 1
  t.equal(budget.tryRetry(), true, 'ten slices later it is gone')
})

t.test('Date.now by default', async (t) => {
  const budget = new RetryBudget(0, 1)
  t.equal(budget.tryRetry(), true)
  t.equal(budget.tryRetry(), false)
})
