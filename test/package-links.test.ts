// The package as someone who found it on the registry meets it: package.json says where the
// project lives, and every link and image in the shipped Markdown still leads somewhere from
// the package page or an unpacked node_modules/fastify-upstream: a relative one only to a file
// the package ships, anything else (screenshots, examples) by its address in the repository.
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { dirname, join, normalize } from 'node:path'
import { promisify } from 'node:util'

const root = fileURLToPath(new URL('..', import.meta.url))
const REPOSITORY = 'https://github.com/fastify-upstream/fastify-upstream'

t.test('package.json names the repository, its home page and where to report bugs', async (t) => {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
    repository?: { type: string, url: string }, homepage?: string, bugs?: { url: string }
  }
  t.same(pkg.repository, { type: 'git', url: `git+${REPOSITORY}.git` })
  t.equal(pkg.homepage, `${REPOSITORY}#readme`)
  t.same(pkg.bugs, { url: `${REPOSITORY}/issues` })
})

t.test('links and images in the shipped Markdown resolve inside the package or point at the repository', async (t) => {
  // --ignore-scripts: no second build (prepare) while other tests run.
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, timeout: 30_000 })
  const [pack] = JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>
  const files = new Set(pack!.files.map((f) => f.path))
  const markdown = [...files].filter((path) => path.endsWith('.md'))
  t.ok(markdown.includes('README.md') && markdown.length > 5, `the README and the docs ship (${markdown.length} files)`)

  const broken: string[] = []
  let absolute = 0
  for (const file of markdown) {
    const text = (await readFile(join(root, file), 'utf8')).replace(/```[\s\S]*?```/g, '')
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const link = target!
      if (link.startsWith('#') || link.startsWith('mailto:')) continue
      if (/^https?:\/\//.test(link)) {
        if (link.startsWith(REPOSITORY) || link.startsWith('https://raw.githubusercontent.com/fastify-upstream/fastify-upstream/')) absolute++
        continue
      }
      const path = normalize(join(dirname(file), link.split('#')[0]!))
      if (!files.has(path)) broken.push(`${file}: ${link}`)
    }
  }
  t.same(broken, [], 'every relative link or image is to a file in the package')
  t.ok(absolute >= 5, `screenshots and examples are linked in the repository (${absolute} links)`)
})
