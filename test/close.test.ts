import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { childEnv } from './helpers/child.js'

/** Runs a fixture that ends with app.close() in a process of its own: its last line of output, parsed, once it has exited by itself. */
async function closeInChild<T> (t: Test, fixture: string): Promise<T> {
  const script = fileURLToPath(new URL(`./fixtures/${fixture}`, import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'], env: childEnv() })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const killer = setTimeout(() => child.kill('SIGKILL'), 20000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])))
  clearTimeout(killer)
  t.equal(signal, null, 'the process was not killed: it exited by itself')
  t.equal(code, 0)
  return JSON.parse(output.trim().split('\n').pop()!) as T
}

t.test('app.close() leaves no socket, timer or dispatcher open: the process exits on its own', async (t) => {
  const report = await closeInChild<{ status: number, left: string[] }>(t, 'close-child.ts')
  t.equal(report.status, 504, 'the in-flight request was answered (headers timeout) before close finished')
  t.same(report.left, [], 'no resource beyond those the process started with')
})

t.test('app.close() with coalesced cache misses and a background refresh in flight leaves nothing behind', async (t) => {
  const report = await closeInChild<{ refreshed: string, cold: string[], left: string[] }>(t, 'cache-close-child.ts')
  t.equal(report.refreshed, 'fastify-upstream; hit; detail=stale-while-revalidate')
  t.equal(report.cold.length, 10)
  t.ok(report.cold.every((status) => status.startsWith('fastify-upstream; ')), `every waiting request was answered: ${report.cold.join(' | ')}`)
  t.equal(report.cold.filter((status) => status === 'fastify-upstream; fwd=miss; fwd-status=200; stored').length, 1, 'one fetched')
  t.same(report.left, [], 'no resource beyond those the process started with')
})
