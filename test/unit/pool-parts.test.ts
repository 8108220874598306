// The parts a pool is composed of, without a socket: the outlier detector (streaks, ejections,
// the half-open trial), the admission queue, selection (backups, panic) and the outage words.
import t from 'tap'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { Target } from '../../lib/pool/target.js'
import { OutlierDetector, TRIAL_INTERVAL_MS } from '../../lib/pool/outlier.js'
import { Transitions } from '../../lib/pool/transitions.js'
import { AdmissionQueue } from '../../lib/pool/admission.js'
import { Selection } from '../../lib/pool/selection.js'
import { explainOutage } from '../../lib/pool/outage.js'
import { validateOptions } from '../../lib/options/validate.js'
import type { PoolInput } from '../../lib/options/types.js'

interface Logged { level: 'warn' | 'info', msg: string, record: Record<string, unknown> }

function logger (): { log: FastifyBaseLogger, lines: Logged[] } {
  const lines: Logged[] = []
  const at = (level: Logged['level']) => (record: Record<string, unknown>, msg: string) => { lines.push({ level, msg, record }) }
  return { log: { warn: at('warn'), info: at('info') } as unknown as FastifyBaseLogger, lines }
}

function pool (options: PoolInput) {
  const config = validateOptions({ pools: { p: options }, routes: [{ prefix: '/', pool: 'p' }] }).pools.get('p')!
  const targets = config.targets.map((target) => new Target(target, config))
  const { log, lines } = logger()
  const transitions = new Transitions('p', log)
  const outlier = new OutlierDetector(config.outlier, () => targets, transitions)
  return { config, targets, outlier, lines, log, selection: new Selection(config, outlier, log) }
}

const request = { headers: {}, ip: '127.0.0.1' } as unknown as FastifyRequest
const urls = (n: number): string[] => Array.from({ length: n }, (_, i) => `http://127.0.0.1:${4000 + i}`)

t.test('a failure streak shows as failing, then ejects at outlier.consecutiveFailures, each logged once', async (t) => {
  const { targets: [a], outlier, lines } = pool({ targets: urls(2), outlier: { consecutiveFailures: 3, ejectFor: 30_000 } })
  outlier.failed(a!, 'connection_refused', 'ECONNREFUSED')
  t.equal(a!.state(), 'healthy', 'one failure is noise')
  outlier.failed(a!, 'connection_refused', 'ECONNREFUSED')
  t.equal(a!.state(), 'failing')
  outlier.failed(a!, 'connection_refused', 'ECONNREFUSED')
  t.equal(a!.state(), 'ejected')
  t.same(lines.map((l) => [l.level, l.record.from, l.record.to]), [['warn', 'healthy', 'failing'], ['warn', 'failing', 'ejected']])
  t.match(lines[1]!.msg, /ejected for 30000 ms after 3 failures in a row \(outlier.consecutiveFailures = 3\), the last: connection_refused \(ECONNREFUSED\)/)
  t.same([a!.failures, a!.ejections, a!.ejectionsTotal], [3, 1, 1])
  outlier.close()
})

t.test('maxEjectedPercent keeps a second of two targets in rotation, failing', async (t) => {
  const { targets: [a, b], outlier } = pool({ targets: urls(2), outlier: { consecutiveFailures: 1 } })
  outlier.failed(a!, 'connection_refused', null)
  outlier.failed(b!, 'connection_refused', null)
  outlier.failed(b!, 'connection_refused', null)
  t.equal(a!.state(), 'ejected')
  t.equal(b!.state(), 'failing')
  t.match(b!.why(), /maxEjectedPercent \(50\) keeps it from being ejected/)
  outlier.close()
})

t.test('without outlier detection failures are counted and shown, nothing is ejected', async (t) => {
  const { targets: [a], outlier } = pool({ targets: urls(1), outlier: false })
  for (let i = 0; i < 10; i++) outlier.failed(a!, 'connection_timeout', null)
  t.equal(a!.state(), 'failing')
  t.match(a!.why(), /outlier detection is off/)
  outlier.succeeded(a!, 200)
  t.equal(a!.state(), 'healthy', 'a good answer ends the streak')
})

t.test('the half-open trial: one ejected primary, a second after its ejection, at most one a second', async (t) => {
  const { targets: [a], outlier, selection, lines } = pool({ targets: urls(1), outlier: { consecutiveFailures: 1, ejectFor: 60_000 } })
  outlier.failed(a!, 'connection_refused', null)
  const ejectedAt = a!.since
  t.equal(outlier.trial(ejectedAt + 10), null, 'not at once')
  t.same(selection.candidates([a!], request), [], 'a fast 503 meanwhile')
  const later = ejectedAt + TRIAL_INTERVAL_MS + 1
  t.equal(outlier.trial(later), a, 'a second later, the ejected target gets one trial')
  t.ok(outlier.isTrial(a!))
  t.equal(outlier.trial(later + 10), null, 'no second trial within the second')
  outlier.succeeded(a!, 200)
  t.equal(a!.state(), 'healthy', 'its success ends the ejection')
  t.ok(a!.probation, 'on probation')
  t.match(lines.at(-1)!.msg, /a trial request succeeded .* on probation/)
  outlier.failed(a!, 'connection_refused', null)
  t.equal(a!.state(), 'ejected', 'one failure on probation ejects again')
  t.match(lines.at(-1)!.msg, /failed again on its first request back.*ejection 2, time doubled/)
  t.equal(a!.ejectedUntil! - a!.since, 120_000, 'for twice as long')
  outlier.close()
})

t.test('a trial waits while an ejected target still has a request in flight; backups get none', async (t) => {
  const { targets: [a, b], outlier } = pool({ targets: [urls(1)[0]!, { url: urls(2)[1]!, backup: true }], outlier: { consecutiveFailures: 1, maxEjectedPercent: 100 } })
  outlier.failed(a!, 'connection_refused', null)
  outlier.failed(b!, 'connection_refused', null)
  a!.inFlight = 1
  t.equal(outlier.trial(Date.now() + 5000), null, 'one trial at a time')
  a!.inFlight = 0
  t.equal(outlier.trial(Date.now() + 5000), a, 'the primary, never the backup')
  outlier.close()
})

t.test('selection: backups only while no primary can take traffic; panic sends to all but drained', async (t) => {
  const { targets: [a, b, c], selection, outlier } = pool({ targets: [urls(1)[0]!, urls(2)[1]!, { url: urls(3)[2]!, backup: true }], outlier: { consecutiveFailures: 1, maxEjectedPercent: 100 } })
  t.same(new Set(selection.candidates([a!, b!, c!], request)), new Set([a, b]), 'primaries first')
  outlier.failed(a!, 'connection_refused', null)
  outlier.failed(b!, 'connection_refused', null)
  t.same(selection.candidates([a!, b!, c!], request), [c], 'the backup once every primary is out')
  outlier.close()

  const panicky = pool({ targets: urls(3), panic: true, outlier: { consecutiveFailures: 1, maxEjectedPercent: 100 } })
  const [x, y, z] = panicky.targets
  for (const target of [x!, y!, z!]) panicky.outlier.failed(target, 'connection_refused', null)
  z!.drain()
  t.same(new Set(panicky.selection.candidates([x!, y!, z!], request)), new Set([x, y]), 'panic: every target but the drained one')
  t.ok(panicky.selection.inPanic)
  t.match(panicky.lines.at(-1)!.msg, /panic is on/)
  panicky.outlier.close()
})

t.test('the admission queue: oldest first, bounded by maxPending, a woken waiter back at the head', async (t) => {
  const queue = new AdmissionQueue(2)
  const order: string[] = []
  const first = queue.enqueue(() => order.push('first'), () => order.push('first timed out'), 60_000)
  queue.enqueue(() => order.push('second'), () => {}, 60_000)
  t.equal(queue.enqueue(() => {}, () => {}, 60_000), null, 'a full line turns the third away')
  t.ok(queue.enqueue(() => order.push('again'), () => {}, 60_000, true), 'but not one that was already in it')
  t.equal(queue.length, 3)
  queue.next()
  first!.cancel()
  queue.next()
  queue.next()
  t.same(order, ['again', 'second'], 'the woken waiter went first; the cancelled one never wakes')
  t.equal(queue.length, 0)

  let timedOut = false
  queue.enqueue(() => {}, () => { timedOut = true }, 5)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(timedOut, 'queueTimeout passed')
  t.equal(queue.length, 0, 'and it left the line')
  queue.enqueue(() => t.fail('cleared waiters never wake'), () => t.fail('nor time out'), 5)
  queue.clear()
  await new Promise((resolve) => setTimeout(resolve, 30))
})

t.test('outage words: each target on a line, and when one may be back', async (t) => {
  const { config, targets: [a, b], outlier } = pool({ targets: urls(2), outlier: { consecutiveFailures: 1, maxEjectedPercent: 100 } })
  outlier.failed(a!, 'connection_refused', 'ECONNREFUSED')
  b!.drain()
  const outage = explainOutage(config, [a!, b!], [])
  t.equal(outage.error, 'destination_unavailable')
  t.match(outage.context.why, /\n- 127\.0\.0\.1:4000: ejected after 1 failure in a row .*; back at /)
  t.match(outage.context.why, /\n- 127\.0\.0\.1:4001: drained by an operator since /)
  t.equal(outage.context.retryAfter, 1, 'the half-open trial comes within a second')
  outlier.close()
})
