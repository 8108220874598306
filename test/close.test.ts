import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { childEnv } from './helpers/child.js'

t.test('app.close() leaves no socket, timer or dispatcher open: the process exits on its own', async (t) => {
  const script = fileURLToPath(new URL('./fixtures/close-child.ts', import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'], env: childEnv() })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const killer = setTimeout(() => child.kill('SIGKILL'), 20000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])))
  clearTimeout(killer)
  t.equal(signal, null, 'the process was not killed: it exited by itself')
  t.equal(code, 0)
  const report = JSON.parse(output.trim().split('\n').pop()!) as { status: number, left: string[] }
  t.equal(report.status, 504, 'the in-flight request was answered (headers timeout) before close finished')
  t.same(report.left, [], 'no resource beyond those the process started with')
})
