// `npm run demo` as a new user meets it: start examples/demo.ts, read the curl lines it prints,
// run every one (in-process, with the same method, headers and body) and check each answer,
// then stop it with Ctrl-C and check it exits cleanly. A curl line this test cannot read, or
// one it has no expectation for, fails the test: the demo and this test stay in step.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { ourProxyStatus } from './helpers/proxy-status.js'
import { childEnv } from './helpers/child.js'

const demo = fileURLToPath(new URL('../examples/demo.ts', import.meta.url))
const root = fileURLToPath(new URL('..', import.meta.url))

/** The demo's upload is 50 MB; a test sends this much at most (the point is that it streams). */
const MAX_UPLOAD = 1024 * 1024

/**
 * A printed line is one curl command, or `for v in a b c; do curl … $v … & done; wait`: the
 * same request to several URLs at once.
 */
function parseLine (line: string): CurlRequest {
  const loop = /^for (\w+) in ([\w ]+); do (curl .*) & done; wait$/.exec(line)
  if (loop === null) return parseCurl(line)
  const [, name, values, command] = loop
  const requests = values!.trim().split(/\s+/).map((value) => parseCurl(command!.replaceAll(`$${name!}`, value)))
  return { ...requests[0]!, urls: requests.flatMap((r) => r.urls) }
}

interface CurlRequest {
  method: 'GET' | 'POST'
  urls: string[]
  headers: Record<string, string>
  body: Buffer | null
}

interface Answer {
  url: string
  status: number
  headers: Record<string, string | string[] | undefined>
  /** The body as far as it came; `cut` when the connection broke before its end. */
  body: string
  cut: boolean
  ms: number
}

/**
 * Reads one printed curl line: `[head -c N /dev/zero | ]curl [-s] [-i] [-N] [-Z] [-H 'h: v']…
 * [--data-binary @-] URL…`, with `$(head -c N /dev/zero | tr '\0' a)` in a header value standing
 * for N letters a. Anything else throws, naming the line.
 */
function parseCurl (line: string): CurlRequest {
  let command = line
  let body: Buffer | null = null
  const piped = /^head -c (\d+) \/dev\/zero \| (curl .*)$/.exec(command)
  if (piped !== null) {
    body = Buffer.alloc(Math.min(Number(piped[1]), MAX_UPLOAD))
    command = piped[2]!
  }
  command = command.replace(/\$\(head -c (\d+) \/dev\/zero \| tr '\\0' a\)/g, (_, n: string) => 'a'.repeat(Number(n)))
  const words = shellWords(command)
  if (words.shift() !== 'curl') throw new Error(`not a curl line: ${line}`)
  const request: CurlRequest = { method: 'GET', urls: [], headers: {}, body: null }
  while (words.length > 0) {
    const word = words.shift()!
    if (['-s', '-i', '-N'].includes(word)) continue
    if (word === '-H') {
      const header = words.shift() ?? ''
      const colon = header.indexOf(':')
      if (colon < 1) throw new Error(`a header without a name in: ${line}`)
      request.headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim()
    } else if (word === '--data-binary' && words[0] === '@-' && body !== null) {
      words.shift()
      request.method = 'POST'
      request.body = body
    } else if (/^https?:\/\//.test(word)) {
      request.urls.push(word)
    } else {
      throw new Error(`a curl argument this test cannot run ("${word}") in: ${line}`)
    }
  }
  if (request.urls.length === 0) throw new Error(`no URL in: ${line}`)
  return request
}

/** Splits a command into words as a POSIX shell would for '…' and "…" (no expansions). */
function shellWords (command: string): string[] {
  const words: string[] = []
  let word: string | null = null
  for (let i = 0; i < command.length; i++) {
    const c = command[i]!
    if (c === ' ') {
      if (word !== null) words.push(word)
      word = null
    } else if (c === "'") {
      const end = command.indexOf("'", i + 1)
      if (end < 0) throw new Error(`unbalanced quote in: ${command}`)
      word = (word ?? '') + command.slice(i + 1, end)
      i = end
    } else if (c === '"') {
      let text = ''
      for (i++; i < command.length && command[i] !== '"'; i++) {
        text += command[i] === '\\' ? command[++i] : command[i]
      }
      word = (word ?? '') + text
    } else {
      word = (word ?? '') + c
    }
  }
  if (word !== null) words.push(word)
  return words
}

t.test('the curl lines the demo prints are read as a shell would', async (t) => {
  t.same(parseCurl("curl -s -H 'accept: application/json' http://h/x"), { method: 'GET', urls: ['http://h/x'], headers: { accept: 'application/json' }, body: null })
  const upload = parseCurl('head -c 50000000 /dev/zero | curl -s --data-binary @- http://h/up')
  t.equal(upload.method, 'POST')
  t.equal(upload.body?.length, MAX_UPLOAD, 'the upload is capped under test')
  const cookie = parseCurl("curl -i -H \"cookie: $(head -c 20 /dev/zero | tr '\\0' a)\" http://h/u")
  t.equal(cookie.headers.cookie, 'a'.repeat(20))
  t.same(parseLine('for r in a b; do curl -s http://h/x/$r & done; wait').urls, ['http://h/x/a', 'http://h/x/b'])
  t.throws(() => parseCurl('curl -X DELETE http://h/x'), /cannot run \("-X"\)/)
})

async function send (req: CurlRequest, url: string): Promise<Answer> {
  const started = Date.now()
  const res = await request(url, {
    method: req.method,
    headers: req.headers,
    body: req.body,
    headersTimeout: 15_000,
    bodyTimeout: 15_000
  })
  const chunks: Buffer[] = []
  let cut = false
  try {
    for await (const chunk of res.body) {
      chunks.push(chunk as Buffer)
      // An event stream lasts five seconds: its first event is the proof that it streams.
      if (String(res.headers['content-type']).startsWith('text/event-stream') && Buffer.concat(chunks).includes('data:')) {
        res.body.destroy()
        break
      }
    }
  } catch {
    cut = true
  }
  return { url, status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString(), cut, ms: Date.now() - started }
}

const json = (answer: Answer): Record<string, unknown> => JSON.parse(answer.body) as Record<string, unknown>

/** What each printed line must answer, keyed by a piece of the line. */
const expectations: Array<{ match: RegExp, check: (t: Test, answers: Answer[], req: CurlRequest) => void }> = [
  {
    match: /\/users\/42$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200)
      t.match(json(a!), { instance: /^users-[ab]$/, path: '/42' }, 'a users instance answered, the prefix stripped')
    }
  },
  {
    match: /\/users\/events$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200)
      t.match(a!.headers['content-type'], /^text\/event-stream/)
      t.match(a!.body, /^data: \{"instance":"users-[ab]","event":1\}/, 'the first event streamed through')
    }
  },
  {
    match: /\/users\/upload$/,
    check: (t, [a], req) => {
      t.equal(a!.status, 200)
      t.equal(json(a!).received, req.body!.length, 'every byte of the upload reached the service')
    }
  },
  {
    match: /\/orders\/7$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200)
      t.match(json(a!), { instance: 'orders-1', path: '/orders/7' })
    }
  },
  {
    match: /\/orders\/slow$/,
    check: (t, [a]) => {
      t.equal(a!.status, 504)
      t.match(ourProxyStatus(a!.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_response_timeout' } })
      t.match(a!.body, /^504 Service took too long/, 'plain text for curl')
    }
  },
  {
    match: /accept: application\/json' \S+\/orders\/crash$/,
    check: (t, [a]) => {
      t.equal(a!.status, 502)
      t.match(a!.headers['content-type'], /^application\/problem\+json/)
      t.match(json(a!), { error: 'connection_terminated', blame: 'upstream', pool: 'orders' })
    }
  },
  {
    match: /\/orders\/garbage$/,
    check: (t, [a]) => {
      t.equal(a!.status, 502)
      t.match(a!.body, /error: http_protocol_error/)
    }
  },
  {
    match: /\/orders\/partial$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200, 'the headers had gone out before the service died')
      t.ok(a!.cut, 'the client connection was cut, not ended as if complete')
    }
  },
  {
    match: /\/orders\/oops$/,
    check: (t, [a]) => {
      t.equal(a!.status, 500)
      t.match(ourProxyStatus(a!.headers['proxy-status']), { proxy: 'fastify-upstream', params: { 'received-status': 500 } })
      t.match(json(a!), { error: 'orders database is read-only' }, "the service's own body")
    }
  },
  {
    match: /\/billing\/invoices$/,
    check: (t, [a]) => {
      t.equal(a!.status, 502)
      t.match(json(a!), { error: 'connection_refused', pool: 'billing', phase: 'connect' })
    }
  },
  {
    match: /\/reports\//,
    check: (t, answers) => {
      t.ok(answers.length >= 3, 'several slow requests at once')
      for (const a of answers) {
        t.equal(a.status, 200)
        t.ok(a.ms >= 2000, `a slow answer takes its time (${a.ms} ms)`)
      }
    }
  },
  {
    match: /curl -s \S+\/catalog\/products$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200)
      t.equal(a!.headers['cache-status'], 'fastify-upstream; fwd=miss; fwd-status=200; stored')
      t.match(json(a!), { instance: 'catalog-1', servedByTheService: 1 })
    }
  },
  {
    match: /curl -i \S+\/catalog\/products$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200)
      t.equal(a!.headers['cache-status'], 'fastify-upstream; hit')
      t.match(a!.headers.age, /^\d+$/)
      t.match(json(a!), { servedByTheService: 1 }, 'the stored answer')
    }
  },
  {
    match: /\/catalog\/outage$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200)
      t.match(json(a!), { stopping: true })
    }
  },
  {
    match: /max-age=0' \S+\/catalog\/products$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200, 'the last good answer, not a 502')
      t.equal(a!.headers['cache-status'], 'fastify-upstream; hit; detail=stale-if-error')
      t.match(ourProxyStatus(a!.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'connection_refused' } })
      t.match(json(a!), { servedByTheService: 1 })
    }
  },
  {
    match: /\/_upstream$/,
    check: (t, [a]) => {
      t.equal(a!.status, 200)
      const report = json(a!) as { pools: Array<{ name: string }>, diagnosis: Array<{ pool: string, title: string }> }
      t.same(report.pools.map((p) => p.name).sort(), ['billing', 'catalog', 'orders', 'reports', 'users'])
      t.ok(report.diagnosis.some((f) => f.pool === 'reports' && /answers in \d+ ms on average/.test(f.title)),
        'the diagnosis names the slow pool')
    }
  },
  {
    match: /x-request-id: my-id-1/,
    check: (t, [a]) => {
      t.equal(a!.status, 502)
      t.equal(a!.headers['x-request-id'], 'my-id-1', "the caller's id comes back")
      t.match(a!.body, /request id: my-id-1/)
    }
  },
  {
    match: /cookie: /,
    check: (t, [a]) => {
      t.equal(a!.status, 431)
      t.match(ourProxyStatus(a!.headers['proxy-status']), { proxy: 'fastify-upstream', params: { error: 'http_request_error' } })
    }
  }
]

t.test('npm run demo: every curl line it prints answers as its comment says; Ctrl-C stops it cleanly', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', demo], {
    cwd: root,
    env: childEnv({ PORT: '0', NODE_ENV: 'development' }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const killer = setTimeout(() => child.kill('SIGKILL'), 50_000)
  t.teardown(() => {
    clearTimeout(killer)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const banner = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      if (stdout.includes('Ctrl-C stops it.')) resolve(stdout)
    })
    void exited.then(([code]) => { reject(new Error(`the demo exited (${String(code)}) before it was ready:\n${stderr}`)) })
  })

  const lines = banner.split('\n')
  const gateway = /Status page: (http:\/\/127\.0\.0\.1:\d+)\/_upstream/.exec(banner)
  t.ok(gateway, 'the banner gives the status page URL')
  const tries = lines.slice(lines.indexOf('Try:') + 1, lines.indexOf('', lines.indexOf('Try:')))
    .map((line) => line.trim().replace(/\s+# .*$/, ''))
  t.ok(tries.length >= 10, `the demo prints curl lines to try (${tries.length})`)

  for (const line of tries) {
    const expectation = expectations.find((e) => e.match.test(line))
    if (expectation === undefined) {
      t.fail(`no expectation for the printed line: ${line}`)
      continue
    }
    const req = parseLine(line)
    const answers = await Promise.all(req.urls.map(async (url) => await send(req, url)))
    await t.test(line.length > 100 ? `${line.slice(0, 100)}…` : line, async (t) => { expectation.check(t, answers, req) })
  }

  const page = await request(`${gateway![1]}/_upstream`, { headers: { accept: 'text/html' } })
  t.equal(page.statusCode, 200, 'the status page opens in a browser')
  t.match(await page.body.text(), /reports/)

  child.kill('SIGINT')
  const [code, signal] = await exited
  t.equal(signal, null, 'it exited by itself, not killed')
  t.equal(code, 0, 'and cleanly')
  t.match(stderr, /SIGINT: closing the gateway and the upstreams/)
  t.notMatch(stderr, /left a handle open|shutdown failed/)
})
