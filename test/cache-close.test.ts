// app.close() with the cache busy (waiters on a lock, a background refresh, a slow fetch)
// leaves nothing behind: the process exits on its own.
import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { childEnv } from './helpers/child.js'

t.test('app.close() with coalesced misses and a refresh in flight leaves no timer or socket', async (t) => {
  const script = fileURLToPath(new URL('./fixtures/cache-close-child.ts', import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'], env: childEnv() })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const killer = setTimeout(() => child.kill('SIGKILL'), 20000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])))
  clearTimeout(killer)
  t.equal(signal, null, 'the process exited by itself')
  t.equal(code, 0)
  const report = JSON.parse(output.trim().split('\n').pop()!) as { refreshed: string, cold: string[], left: string[] }
  t.equal(report.refreshed, 'fastify-upstream; hit; detail=stale-while-revalidate')
  t.equal(report.cold.length, 10)
  t.ok(report.cold.every((status) => status.startsWith('fastify-upstream; ')), `every waiting request was answered: ${report.cold.join(' | ')}`)
  t.equal(report.cold.filter((status) => status === 'fastify-upstream; fwd=miss; fwd-status=200; stored').length, 1, 'one fetched')
  t.same(report.left, [], 'no resource beyond those the process started with')
})
