// lib/pool/outlier.ts without a socket: ejection times, the ejection cap, the failure streak.
import t from 'tap'
import { ejectionTime, isFailureStatus, mayEject, shouldEject } from '../../lib/pool/outlier.js'
import type { OutlierConfig } from '../../lib/options/config.js'

const config: OutlierConfig = { consecutiveFailures: 5, ejectFor: 1000, maxEjectFor: 5000, maxEjectedPercent: 50 }

t.test('ejectionTime doubles with each ejection up to maxEjectFor', async (t) => {
  t.same([0, 1, 2, 3, 4].map((n) => ejectionTime(config, n)), [1000, 1000, 2000, 4000, 5000])
  t.equal(ejectionTime({ ...config, maxEjectFor: 4000 }, 3), 4000, 'exactly at the cap')
})

t.test('mayEject: never past maxEjectedPercent, but one target always', async (t) => {
  t.equal(mayEject(config, 0, 4), true, 'the first of four')
  t.equal(mayEject(config, 1, 4), true, 'the second of four is exactly 50%')
  t.equal(mayEject(config, 2, 4), false, 'a third would be 75%')
  t.equal(mayEject({ ...config, maxEjectedPercent: 10 }, 0, 2), true, '10% of 2 rounds to none, yet one may go')
  t.equal(mayEject({ ...config, maxEjectedPercent: 10 }, 1, 2), false)
  t.equal(mayEject({ ...config, maxEjectedPercent: 100 }, 1, 2), true)
})

t.test('shouldEject: a streak of consecutiveFailures, or one failure on probation', async (t) => {
  t.equal(shouldEject(config, 4, false), false)
  t.equal(shouldEject(config, 5, false), true, 'exactly consecutiveFailures')
  t.equal(shouldEject(config, 6, false), true)
  t.equal(shouldEject(config, 1, true), true, 'on probation one failure is enough')
  t.equal(shouldEject(config, 0, true), true)
})

t.test('isFailureStatus: 502, 503 and 504 only', async (t) => {
  t.same([500, 501, 502, 503, 504, 505, 429, 200].filter(isFailureStatus), [502, 503, 504])
})
