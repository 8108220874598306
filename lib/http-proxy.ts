// `httpProxy`: @fastify/http-proxy's options, registered as the gateway's one pool and one
// route, so an app moves by changing its import. Registered several times (one prefix each, as
// http-proxy users do), the registrations share app.upstream and the status page, and join the
// metrics of a fastify-upstream registration made before them (registrations.ts).
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { fromHttpProxy, type HttpProxyOptions } from './options/http-proxy.js'
import { OptionsError } from './options/check.js'
import { earlierRegistrations } from './registrations.js'
import type { UpstreamOptions } from './options/types.js'

export type { HttpProxyOptions, HttpProxyReplyOptions } from './options/http-proxy.js'

/** Made from the gateway plugin (index.ts), which this module cannot import without a cycle. */
export function makeHttpProxy (gateway: FastifyPluginAsync<UpstreamOptions>): FastifyPluginAsync<HttpProxyOptions> {
  async function httpProxy (app: FastifyInstance, options: HttpProxyOptions): Promise<void> {
    const mapped = fromHttpProxy(options)
    if (earlierRegistrations(app) === null) {
      // An app that moved by changing an import gets no new public route: /metrics answers
      // anyone and names targets, so it waits for the plugin's own form (or an earlier
      // registration of it). The status page answers only under full exposure.
      mapped.metrics = false
      // A route of the app's own at the status page's path keeps it.
      if (app.hasRoute({ method: 'GET', url: '/_upstream' })) {
        mapped.status = false
        app.log.info('httpProxy: the app serves GET /_upstream itself, so fastify-upstream\'s status page is not registered')
      }
    }
    try {
      await app.register(gateway, mapped)
    } catch (err) {
      // The gateway names its own option paths; the app wrote http-proxy's.
      if (err instanceof OptionsError) throw new OptionsError(httpProxyPath(err.path, Object.keys(mapped.pools)[0]!), err.message.slice(err.path.length + 2))
      throw err
    }
  }
  return fp(httpProxy, { fastify: '5.x', name: 'fastify-upstream-http-proxy' })
}

/** The http-proxy option a gateway option path came from (the nearest one: the message says the rest). */
function httpProxyPath (path: string, pool: string): string {
  const poolPath = `pools[${JSON.stringify(pool)}]`
  const table: Array<[string, string]> = [
    ['routes[0].methods', 'httpMethods'],
    ['routes[0].prefix', 'prefix'],
    ['routes[0].rewritePrefix', 'rewritePrefix'],
    ['routes[0].retry.methods', 'retryMethods'],
    ['routes[0].retry.retries', 'replyOptions.retriesCount'],
    ['routes[0].timeouts', 'undici'],
    ['routes[0].preHandler', 'preHandler'],
    ['routes[0].preValidation', 'preValidation'],
    ['routes[0].config', 'config'],
    ['routes[0].constraints', 'constraints'],
    ['routes[0].rewriteRequestHeaders', 'replyOptions.rewriteRequestHeaders'],
    ['routes[0].rewriteResponseHeaders', 'replyOptions.rewriteHeaders'],
    ['routes[0]', 'options'],
    [`${poolPath}.targets`, 'upstream'],
    [`${poolPath}.tls`, 'undici.connect'],
    [`${poolPath}.connections`, 'undici'],
    [poolPath, 'upstream']
  ]
  for (const [from, to] of table) {
    if (path === from) return to
    // routes[0].methods[1] → httpMethods[1]; a deeper gateway path under a renamed one keeps its tail.
    if (path.startsWith(`${from}[`)) return to + path.slice(from.length)
    if (path.startsWith(`${from}.`)) return to
  }
  return path
}
