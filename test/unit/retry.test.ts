// lib/proxy/retry.ts without a socket: which failures and statuses are tried again, and why not.
import t from 'tap'
import { afterFailure, backoff, BACKOFF_BASE_MS, BACKOFF_CAP_MS, conditionOf, isFreeRetry, shouldRetryFailure, shouldRetryStatus, type RetryQuestion } from '../../lib/proxy/retry.js'
import type { RetryConfig } from '../../lib/options/config.js'
import type { RetryCondition } from '../../lib/options/types.js'

const policy = (over: Partial<RetryConfig> = {}): RetryConfig => ({
  retries: 2,
  on: new Set<RetryCondition>(['connect-failure', 'refused-stream', 'reset', 'timeout', '5xx']),
  statuses: new Set<number>(),
  methods: new Set(['GET', 'HEAD']),
  budget: { ratio: 0.2, minPerSecond: 10 },
  ...over
})

const question = (over: Partial<RetryQuestion> = {}): RetryQuestion => ({
  error: 'connection_refused',
  phase: 'connect',
  method: 'GET',
  policy: policy(),
  retries: 0,
  replayable: true,
  unreplayableWhy: 'a streamed body of more than 64 KiB',
  ...over
})

t.test('backoff: full jitter under a doubling cap', async (t) => {
  t.equal(backoff(1, () => 1), BACKOFF_BASE_MS, 'the first retry waits at most the base')
  t.equal(backoff(2, () => 1), BACKOFF_BASE_MS * 2)
  t.equal(backoff(3, () => 1), BACKOFF_BASE_MS * 4)
  t.equal(backoff(0, () => 1), BACKOFF_BASE_MS, 'retry 0 is treated as the first')
  t.equal(backoff(10, () => 1), BACKOFF_CAP_MS, 'capped')
  t.equal(backoff(3, () => 0.5), BACKOFF_BASE_MS * 2, 'random scales the cap')
  t.equal(backoff(3, () => 0), 0)
  const waited = backoff(1)
  t.ok(waited >= 0 && waited < BACKOFF_BASE_MS, `Math.random by default (${waited})`)
})

t.test('conditionOf: each failure type under its retry.on condition', async (t) => {
  for (const error of ['connection_refused', 'connection_timeout', 'destination_ip_unroutable', 'dns_error', 'dns_timeout', 'tls_protocol_error', 'tls_certificate_error'] as const) {
    t.equal(conditionOf(error, 'connect'), 'connect-failure', error)
  }
  t.equal(conditionOf('connection_terminated', 'send'), 'refused-stream', 'cut while the request went out')
  t.equal(conditionOf('connection_terminated', 'headers'), 'reset', 'cut while waiting for the answer')
  t.equal(conditionOf('http_response_timeout', 'headers'), 'timeout')
  t.equal(conditionOf('connection_write_timeout', 'send'), 'timeout')
  t.equal(conditionOf('http_response_incomplete', 'body'), null)
  t.equal(conditionOf('proxy_internal_error', 'connect'), null)
})

t.test('isFreeRetry: only failures the upstream never saw', async (t) => {
  t.equal(isFreeRetry('connection_refused'), true)
  t.equal(isFreeRetry('destination_ip_unroutable'), true)
  t.equal(isFreeRetry('dns_error'), true)
  t.equal(isFreeRetry('connection_timeout'), false)
  t.equal(isFreeRetry('dns_timeout'), false)
  t.equal(isFreeRetry('connection_terminated'), false)
})

t.test('shouldRetryFailure: each reason a failure is not retried, in words', async (t) => {
  t.same(shouldRetryFailure(question()), { retry: true })
  t.same(shouldRetryFailure(question({ retries: 1 })), { retry: true }, 'one retry of two made')
  t.same(shouldRetryFailure(question({ retries: 2 })), { retry: false, why: 'all 2 retries (retry.retries) were used' })
  t.same(shouldRetryFailure(question({ retries: 3 })), { retry: false, why: 'all 2 retries (retry.retries) were used' })
  t.same(shouldRetryFailure(question({ policy: policy({ retries: 0 }) })), { retry: false, why: 'retries are off (retry.retries = 0)' })
  t.same(shouldRetryFailure(question({ error: 'http_response_incomplete', phase: 'body' })), { retry: false, why: 'http_response_incomplete is not a failure a retry can fix' })
  t.same(shouldRetryFailure(question({ error: 'http_response_timeout', phase: 'headers', policy: policy({ on: new Set(['connect-failure']) }) })),
    { retry: false, why: '"timeout" is not in retry.on' })
  t.same(shouldRetryFailure(question({ error: 'http_response_timeout', phase: 'headers', method: 'POST' })),
    { retry: false, why: 'POST is not in retry.methods and the upstream may have acted on it' })
  t.same(shouldRetryFailure(question({ error: 'connection_refused', method: 'POST' })), { retry: true }, 'never sent: any method')
  t.same(shouldRetryFailure(question({ error: 'http_response_timeout', phase: 'headers', method: 'POST', policy: policy({ methods: new Set(['POST']) }) })), { retry: true }, 'a listed method')
  t.same(shouldRetryFailure(question({ replayable: false })), { retry: false, why: 'the request body could not be replayed (a streamed body of more than 64 KiB)' })
})

t.test('afterFailure: the note, the other target, the budget and free retries', async (t) => {
  const budget = (ok: boolean): { tryRetry: () => boolean, taken: number } => {
    const b = { taken: 0, tryRetry: () => { b.taken++; return ok } }
    return b
  }
  const yes = (): boolean => true
  const no = (): boolean => false

  const spent = budget(true)
  t.same(afterFailure(question({ retries: 2 }), yes, spent), { retry: false, note: undefined }, 'the policy\'s own count needs no note')
  t.same(afterFailure(question({ replayable: false }), yes, spent), { retry: false, note: 'not retried: the request body could not be replayed (a streamed body of more than 64 KiB)' })
  t.same(afterFailure(question(), no, spent), { retry: false, note: 'not retried: no other target can take traffic' })
  t.equal(spent.taken, 0, 'nothing taken from the budget so far')

  const free = budget(false)
  t.same(afterFailure(question(), yes, free), { retry: true, free: true }, 'a refusal is retried even with the budget spent')
  t.equal(free.taken, 0, 'and takes nothing from it')

  const paid = budget(true)
  t.same(afterFailure(question({ error: 'connection_timeout' }), yes, paid), { retry: true, free: false })
  t.equal(paid.taken, 1, 'one retry taken from the budget')

  t.same(afterFailure(question({ error: 'connection_timeout' }), yes, budget(false)),
    { retry: false, note: 'not retried: the retry budget is spent (retry.budget: 0.2 of requests, at least 10/s)' })
})

t.test('shouldRetryStatus: listed statuses and 5xx, for retryable methods, while retries remain', async (t) => {
  const p = policy({ statuses: new Set([429]) })
  t.equal(shouldRetryStatus(503, 'GET', p, 0, true), true)
  t.equal(shouldRetryStatus(500, 'GET', p, 0, true), true)
  t.equal(shouldRetryStatus(499, 'GET', p, 0, true), false, 'a 4xx not listed')
  t.equal(shouldRetryStatus(429, 'GET', p, 0, true), true, 'a listed status')
  t.equal(shouldRetryStatus(503, 'GET', policy({ on: new Set(['connect-failure']) }), 0, true), false, '5xx not in retry.on')
  t.equal(shouldRetryStatus(503, 'POST', p, 0, true), false, 'a POST answered 503 is not sent again: the upstream may have acted on it')
  t.equal(shouldRetryStatus(503, 'GET', p, 1, true), true)
  t.equal(shouldRetryStatus(503, 'GET', p, 2, true), false, 'retries used up')
  t.equal(shouldRetryStatus(503, 'GET', p, 0, false), false, 'body not replayable')
})
