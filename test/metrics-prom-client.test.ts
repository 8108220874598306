// The gateway's duration histograms keep their counts outside prom-client and hand them over at
// scrape time through prom-client's undocumented getForPromString() (see SeriesHistogram in
// lib/observe/metrics.ts). Here they must read exactly as prom-client's own Histogram fed the
// same observations, by every way a registry is read; a prom-client release that reads metrics
// otherwise fails this file rather than silently serving empty histograms.
import t from 'tap'
import { Histogram, Registry, type RegistryContentType } from 'prom-client'
import { BUCKETS, Observed, SeriesHistogram, type Series } from '../lib/observe/metrics.js'

const NAME = 'pin_request_duration_seconds'
const HELP = 'Durations, by pool and target.'

function series (pool: string, target: string): Series {
  return { labels: { pool, target }, requests: new Float64Array(5), total: new Observed(), headers: new Observed() }
}

/** The same observations into our histogram and into prom-client's own, each in its own registry. */
function pair (contentType: RegistryContentType): { ours: Registry, theirs: Registry, observe: (s: Series, value: number) => void, all: Series[] } {
  const registry = (): Registry => {
    const made = new Registry()
    // An app's registry may be an OpenMetrics one; prom-client's typings bind the format to the type.
    ;(made as Registry<RegistryContentType>).setContentType(contentType)
    return made
  }
  const ours = registry()
  const theirs = registry()
  const all = [series('shop', '127.0.0.1:8080'), series('shop', '127.0.0.1:8081'), series('auth', 'auth.internal:443')]
  new SeriesHistogram(NAME, HELP, [ours], () => all, (s) => s.total) // eslint-disable-line no-new
  const histogram = new Histogram({ name: NAME, help: HELP, labelNames: ['pool', 'target'], buckets: BUCKETS, registers: [theirs] })
  return {
    ours,
    theirs,
    all,
    observe: (s, value) => {
      s.total.observe(value)
      histogram.observe(s.labels, value)
    }
  }
}

const VALUES = [0.001, 0.005, 0.0051, 0.02, 0.3, 1, 2.5, 7, 45, 61, 1000]

for (const [format, contentType] of [['Prometheus text', Registry.PROMETHEUS_CONTENT_TYPE], ['OpenMetrics', Registry.OPENMETRICS_CONTENT_TYPE]] as const) {
  t.test(`${format}: read as prom-client's own Histogram reads`, async (t) => {
    const { ours, theirs, observe, all } = pair(contentType)
    const empty = await ours.metrics()
    t.equal(empty, await theirs.metrics(), 'nothing observed: HELP and TYPE only')
    for (const value of VALUES) observe(all[0]!, value)
    observe(all[1]!, 0.07)
    // all[2] observes nothing: no lines for it, as prom-client has none for labels never used.

    const text = await ours.metrics()
    t.equal(text, await theirs.metrics(), 'registry.metrics(): the same text')
    t.match(text, `${NAME}_bucket{le="0.005",pool="shop",target="127.0.0.1:8080"} 2`, 'and it has the counts (prom-client read them through getForPromString)')
    t.match(text, `${NAME}_count{pool="shop",target="127.0.0.1:8081"} 1`)
    t.notMatch(text, 'auth.internal')
    t.equal(await ours.getSingleMetricAsString(NAME), await theirs.getSingleMetricAsString(NAME), 'getSingleMetricAsString(): the same')
    // prom-client's own gives each value an empty `exemplar` (exemplars are off); ours has none.
    const noExemplar = (metrics: Awaited<ReturnType<Registry['getMetricsAsJSON']>>): unknown =>
      metrics.map((m) => ({ ...m, values: m.values.map((v) => Object.fromEntries(Object.entries(v).filter(([k, x]) => k !== 'exemplar' || x != null))) }))
    t.same(await ours.getMetricsAsJSON(), noExemplar(await theirs.getMetricsAsJSON()), 'getMetricsAsJSON() (through get()): the same')

    ours.setDefaultLabels({ instance: 'gw-1' })
    theirs.setDefaultLabels({ instance: 'gw-1' })
    // prom-client's own writes a series' labels after the default ones, ours before: the order
    // of labels means nothing to Prometheus, so they are compared sorted.
    const sorted = (text: string): string => text.replace(/\{([^}]*)\}/g, (_all, inner: string) => `{${inner.split(',').sort().join(',')}}`)
    const labelled = await ours.metrics()
    t.match(labelled, 'instance="gw-1"')
    t.equal(sorted(labelled), sorted(await theirs.metrics()), 'with default labels: the same')

    ours.resetMetrics()
    theirs.resetMetrics()
    t.equal(await ours.metrics(), await theirs.metrics(), 'resetMetrics() starts both over')
    t.equal(all[0]!.total.count, 0, 'our series are emptied by it')
  })
}

t.test('Registry.merge() keeps reading ours', async (t) => {
  const { ours, theirs, observe, all } = pair(Registry.PROMETHEUS_CONTENT_TYPE)
  observe(all[0]!, 0.2)
  const other = new Registry()
  t.equal(await Registry.merge([ours, other]).metrics(), await Registry.merge([theirs, new Registry()]).metrics())
})
