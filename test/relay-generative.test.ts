// The relay under generated upstream answers (issue 20, item 8): statuses with 1xx before them,
// hop-by-hop and Connection-named fields, Trailer, transfer codings, duplicate and conflicting
// lengths, large fields, bodies in every framing written at random read boundaries with small
// pauses, cuts, resets and stalls; clients over HTTP/1.0, HTTP/1.1 keep-alive and pipelined,
// and HTTP/2. test/helpers/relay-fuzz.ts says what each answer must become and checks it.
//
// One gateway per client protocol and one raw upstream serve every case; each case's upstream
// bytes are looked up by its path. Cases run eight at a time, one per lane (a pool of its own),
// so a case's log records and its target's counters are its own.
//
//   npx tap test/relay-generative.test.ts                  5 000 cases, a random seed
//   FUZZ_SEED=123 npx tap test/relay-generative.test.ts    the same cases as a run that printed seed 123
//   FUZZ_SEED=123 FUZZ_PATH=42:1:0 ...                     straight to the shrunk counterexample
//   FUZZ_ALL=1 ...                                         the known-bug areas too (KNOWN_RELAY_BUGS)
//   FUZZ_CASES=20000 ...                                   more cases
import t from 'tap'
import fc from 'fast-check'
import {
  KNOWN_RELAY_BUGS, StrictParser, caseArb, culpritsFirst, describeReport, enabledAreas, runBatch, startRig
} from './helpers/relay-fuzz.js'

// The file's own bound: .taprc's 60 s suits files that take seconds. This one runs 5 000 cases
// in about half a minute on an idle 2-core machine, and must still pass on a busy one.
t.setTimeout(Number(process.env.FUZZ_FILE_TIMEOUT_MS ?? 300_000))

const LANES = 8
const CASES = Number(process.env.FUZZ_CASES ?? 5000)
const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31)
const path = process.env.FUZZ_PATH
const SHRINK_MS = Number(process.env.FUZZ_SHRINK_MS ?? 15_000)

t.test('the client-side parser is strict: it refuses what llhttp refuses without lenient flags', async (t) => {
  const refused: Array<[string, string]> = [
    ['bare LF line ends', 'HTTP/1.1 200 OK\nContent-Length: 1\n\na'],
    ['a length and chunking', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['two Content-Lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n'],
    ['a chunk without its CRLF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n'],
    ['a space after the chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\na\r\n0\r\n\r\n'],
    ['bytes after an answer that said close', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\naHTTP/1.1 200 OK\r\n\r\n'],
    ['a status of four digits', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n'],
    ['bytes after a complete answer that do not start another', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nabc']
  ]
  for (const [what, bytes] of refused) {
    const parser = new StrictParser('response')
    parser.push(Buffer.from(bytes, 'latin1'))
    parser.end()
    t.not(parser.error, null, `${what}: refused (${parser.error ?? 'accepted'})`)
  }
  const parser = new StrictParser('response')
  parser.push(Buffer.from('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab', 'latin1'))
  parser.end()
  t.equal(parser.error, null, 'valid answers parse')
  t.same(parser.messages.map((m) => [m.status, m.interims, m.body.toString(), m.complete]), [[200, [103], 'abc', true], [304, [], '', true], [200, [], 'ab', false]])
  t.same(parser.messages[0]!.trailers, [['X-T', '1']], 'trailers are read')
  t.ok(parser.cut, 'an answer that stops short is a cut, not garbling')
})

t.test(`the relay under ${CASES} generated upstream answers and clients`, async (t) => {
  const enabled = enabledAreas()
  const rig = await startRig(LANES)
  t.teardown(rig.close)
  const off = [...KNOWN_RELAY_BUGS].filter((area) => !enabled.has(area))
  t.comment(`seed ${seed}${path !== undefined ? ` path ${path}` : ''}; known-bug areas left out: ${off.length > 0 ? off.join(', ') : 'none (FUZZ_ALL=1)'}`)
  let cases = 0
  const started = Date.now()
  let failedAt: number | null = null
  const result = await fc.check(fc.asyncProperty(fc.array(caseArb(enabled), { minLength: LANES, maxLength: LANES }), async (batch) => {
    // Shrinking replays whole batches over the network: after SHRINK_MS the candidates left are
    // skipped, so the smallest failing batch found so far is the one reported.
    fc.pre(failedAt === null || Date.now() - failedAt < SHRINK_MS)
    const reports = await runBatch(rig, batch, enabled)
    cases += batch.length
    const failed = culpritsFirst(reports)
    if (failed.length > 0) {
      failedAt ??= Date.now()
      throw new Error(failed.map(describeReport).join('\n'))
    }
  }), {
    seed,
    numRuns: Math.ceil(CASES / LANES),
    ...(path !== undefined ? { path } : {})
  })
  t.comment(`${cases} cases in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  if (result.failed) {
    const error = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)
    t.fail(`a generated case failed; replay with FUZZ_SEED=${result.seed} FUZZ_PATH=${result.counterexamplePath ?? ''}${process.env.FUZZ_ALL === '1' ? ' FUZZ_ALL=1' : ''}\n${error}`)
  } else {
    t.pass(`every property held (seed ${seed})`)
  }
  t.ok(cases >= CASES || path !== undefined, `${cases} cases ran (at least ${CASES})`)
  t.same(rig.crashes, [], 'nothing reached uncaughtException or unhandledRejection')
})
