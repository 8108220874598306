// The status page in a real browser (Debian's /usr/bin/chromium through playwright-core), on a
// phone-sized screen: a diagnosis on screen, nothing run or fetched beyond the document, no
// sideways overflow. Skipped, saying why, where chromium is missing. UPDATE_SCREENSHOT=1 also
// writes docs/status-page.png (the README's screenshot).
import t from 'tap'
import { access, constants } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startGateway } from './helpers/gateway.js'
import { startUpstream, deadTarget } from './helpers/servers.js'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-proxy-server']
const SCREENSHOT = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'status-page.png')

let reason: string | null = null
try {
  await access(CHROMIUM, constants.X_OK)
} catch {
  reason = `chromium not installed: no executable ${CHROMIUM}`
}
const playwright = reason === null ? await import('playwright-core').catch((err: Error) => { reason = `playwright-core not installed: ${err.message}`; return null }) : null

if (reason !== null || playwright === null) {
  console.error(`\n*** test/status-browser.test.ts SKIPPED: ${reason ?? 'no browser'} ***\n`)
  t.plan(0, reason ?? 'no browser')
} else {
  t.test('the status page on a phone: diagnosis first, nothing run or fetched, no overflow', async (t) => {
    const fast = await Promise.all(['a', 'b'].map(async (name) => await startUpstream(name, (_req, res) => { res.end('ok') })))
    // Far slower than the diagnosis' 3x: a loaded machine slows the fast ones too, by less.
    const slow = await startUpstream('slow', (_req, res) => { setTimeout(() => res.end('late'), 1500) })
    for (const u of [...fast, slow]) t.teardown(u.close)
    const dead = await deadTarget(t)
    // A fourth catalog target refuses connections; a lenient outlier setting keeps it in
    // rotation, so the page shows it failing (retries hide it from clients).
    const refusing = await deadTarget(t)
    const gw = await startGateway(t, {
      pools: {
        catalog: { targets: [fast[0]!.url, fast[1]!.url, slow.url, refusing], balancer: 'round-robin', outlier: { consecutiveFailures: 20 } },
        billing: { targets: [dead], outlier: { consecutiveFailures: 1 } }
      },
      routes: [{ prefix: '/catalog', pool: 'catalog' }, { prefix: '/billing', pool: 'billing' }],
      errors: { expose: 'full' },
      status: { diagnosis: { minRequests: 5 } }
    })
    for (let batch = 0; batch < 3; batch++) {
      await Promise.all(Array.from({ length: 9 }, async (_, i) => await (await gw.request(`/catalog/item/${batch * 9 + i}`)).body.text()))
    }
    await (await gw.request('/billing/invoice')).body.text()

    const browser = await playwright.chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 15000 })
    t.teardown(async () => { await browser.close() })
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, colorScheme: 'light' })
    context.setDefaultTimeout(5000)
    const page = await context.newPage()
    const requests: string[] = []
    page.on('request', (request) => { requests.push(request.url()) })
    const response = await page.goto(`${gw.url}/_upstream`, { waitUntil: 'load' })
    t.equal(response?.status(), 200)
    await page.waitForLoadState('networkidle')
    const text = await page.innerText('body')
    t.match(text, /Every target of pool "billing" is out of rotation/)
    t.match(text, /one slow node/)
    t.match(text, /of pool "catalog" is failing: its last \d+ requests failed, the last: connection_refused/)
    t.ok(text.indexOf('Diagnosis') < text.indexOf('Pool catalog'), 'the diagnosis comes first')
    t.same(await page.$$('script'), [], 'no script element')
    t.same(requests, [`${gw.url}/_upstream`], 'nothing fetched but the document')
    const overflow = await page.evaluate('document.documentElement.scrollWidth - window.innerWidth') as number
    t.ok(overflow <= 0, `no sideways scrolling on a phone (overflow ${overflow}px)`)
    if (process.env.UPDATE_SCREENSHOT === '1') {
      await page.setViewportSize({ width: 960, height: 900 })
      await page.screenshot({ path: SCREENSHOT, fullPage: true })
      t.comment(`wrote ${SCREENSHOT}`)
    }
  })
}
