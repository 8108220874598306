// What `npm publish` would ship, checked offline with `npm pack --dry-run`: the built code and
// its types, the TypeScript sources its maps point at, the license and the docs; no tests.
// `npm test` builds dist/ before it runs the tests.
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { dirname, join, normalize } from 'node:path'
import { promisify } from 'node:util'

const root = fileURLToPath(new URL('..', import.meta.url))

interface PackResult { files: Array<{ path: string }> }

t.test('npm pack ships dist, its types and maps, the sources they point at, LICENSE and README; no tests', async (t) => {
  // --ignore-scripts: no second build (prepare) while other tests run; dist/ is already built.
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, timeout: 30_000 })
  const [pack] = JSON.parse(stdout) as PackResult[]
  const files = new Set(pack!.files.map((f) => f.path))

  for (const path of ['LICENSE', 'README.md', 'package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/index.js.map', 'lib/index.ts', 'docs/errors.md']) {
    t.ok(files.has(path), `ships ${path}`)
  }
  const stray = [...files].filter((path) => !/^(dist|lib)\/|^docs\/[^/]+\.md$|^(LICENSE|README\.md|package\.json)$/.test(path))
  t.same(stray, [], 'nothing else: no tests, type tests, examples, benchmarks or coverage')
  t.notOk([...files].some((path) => /\.test\.|(^|\/)(test|types|examples|bench)\//.test(path)), 'no test file under any name')

  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
    exports: { '.': { types: string, default: string } }, types: string, main: string, peerDependencies?: Record<string, string>, license: string
  }
  for (const entry of [pkg.main, pkg.types, pkg.exports['.'].types, pkg.exports['.'].default]) {
    t.ok(files.has(normalize(entry)), `the entry point ${entry} is shipped`)
  }
  t.match(pkg.peerDependencies?.fastify, /^\^5/, 'fastify 5 is a peer dependency: the app brings its own')
  t.equal(pkg.license, 'MIT')
  t.match(await readFile(join(root, 'LICENSE'), 'utf8'), /^MIT License\n\nCopyright \(c\) 2026 fastify-upstream contributors/)

  // Every source map (code and declarations) must point at a file the package ships, or a
  // stack trace and "go to definition" would lead nowhere.
  const maps = [...files].filter((path) => path.endsWith('.map'))
  t.ok(maps.length > 10, `source and declaration maps are shipped (${maps.length})`)
  const unresolved: string[] = []
  for (const map of maps) {
    const { sources } = JSON.parse(await readFile(join(root, map), 'utf8')) as { sources: string[] }
    for (const source of sources) {
      const target = normalize(join(dirname(map), source))
      if (!files.has(target)) unresolved.push(`${map} → ${source}`)
    }
  }
  t.same(unresolved, [], 'every map source resolves inside the package')
})
