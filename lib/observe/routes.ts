// The status page and the request lookup, as ordinary Fastify routes: the app's own hooks (an
// auth preHandler) run on them as on any other. Unless exposed for the request (status.expose,
// else errors.expose), they answer the gateway's 404, as if nothing were there. Each answer is
// negotiated as the error answers are: JSON for JSON clients, HTML for browsers, text for a
// client that asks for nothing (curl); `?format=json|html|text` overrides.
import type { Caches } from '../cache/caches.js'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config, StatusConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import { createErrorHandlers } from '../errors/handlers.js'
import { isFullExposure } from '../errors/problem.js'
import { negotiate } from '../errors/respond.js'
import { isUnknownName } from '../errors/codes.js'
import { buildReport } from './report.js'
import { renderProbe, renderStatus, renderStory } from './page.js'
import { probeText, statusText, storyText } from './text.js'
import { probe } from './probe.js'
import type { Recorder } from './recorder.js'
import type { Metrics } from './metrics.js'
import type { StoreHealth } from '../proxy/rate-limit-store.js'
import type { StoryStore } from './story-store.js'

const REFRESH_SECONDS = 10

export function registerStatus (app: FastifyInstance, config: Config, status: StatusConfig, pools: ReadonlyMap<string, UpstreamPool>, recorder: Recorder, rateLimitStore: StoreHealth | null = null, storyStore: StoryStore | null = null, mirrorsInFlight: (prefix: string) => number = () => 0, caches: readonly Caches[] = []): void {
  const { notFoundHandler } = createErrorHandlers(config, null)
  const errors = status.expose === null ? config.errors : { ...config.errors, expose: status.expose }
  const base = status.path === '/' ? '' : status.path.replace(/\/$/, '')
  const pageOptions = { base: base === '' ? '/' : base, refresh: REFRESH_SECONDS }

  /** Whether to answer at all; when not, the gateway's 404 has been sent. */
  const allowed = (request: FastifyRequest, reply: FastifyReply): boolean => {
    if (isFullExposure(errors, request)) return true
    notFoundHandler(request, reply)
    return false
  }

  app.get(base === '' ? '/' : base, function statusPage (request, reply) {
    if (!allowed(request, reply)) return reply
    const report = buildReport(pools, recorder, config, status, Date.now(), rateLimitStore?.snapshot() ?? null, storyStore?.snapshot() ?? null, mirrorsInFlight)
    const held = caches.flatMap((c) => c.snapshot())
    if (held.length > 0) report.caches = held
    reply.header('cache-control', 'no-store')
    const format = formatOf(request)
    if (format === 'json') return reply.send(report)
    if (format === 'text') return reply.type(TEXT).send(statusText(report, pageOptions.base))
    return reply.type(HTML).send(renderStatus(report, pageOptions))
  })

  app.get<{ Querystring: { pool?: string, target?: string } }>(`${base}/probe`, async function probeTarget (request, reply) {
    if (!allowed(request, reply)) return reply
    const { pool: name, target } = request.query
    const pool = name === undefined ? undefined : pools.get(name)
    reply.header('cache-control', 'no-store')
    const format = formatOf(request)
    const refuse = async (why: string): Promise<FastifyReply> => {
      reply.code(400)
      return format === 'json' ? await reply.send({ error: why }) : await reply.type(TEXT).send(`${why}\n`)
    }
    if (pool === undefined || target === undefined) {
      return await refuse(`Give ?pool= (one of ${[...pools.keys()].join(', ')}) and ?target= (a target URL of that pool).`)
    }
    let result
    try {
      result = await probe(pool, target)
    } catch (err) {
      // A target not in the pool is the caller's mistake; anything else is the gateway's own
      // (its error handler answers proxy_internal_error).
      if (isUnknownName(err)) return await refuse((err as Error).message)
      throw err
    }
    if (format === 'json') return await reply.send(result)
    if (format === 'text') return await reply.type(TEXT).send(probeText(result))
    return await reply.type(HTML).send(renderProbe(result, pageOptions))
  })

  app.get<{ Params: { id: string } }>(`${base}/requests/:id`, async function requestStory (request, reply) {
    if (!allowed(request, reply)) return reply
    const story = await recorder.find(request.params.id)
    reply.header('cache-control', 'no-store')
    const format = formatOf(request)
    if (story === null) {
      const where = recorder.shared === null ? '' : ' on this instance or in the shared store (status.store)'
      const why = `No failed or retried request with id "${request.params.id}" is kept${where}: the last ${status.keep} are (status.keep), and a request that succeeded at the first try is not.`
      reply.code(404)
      return format === 'json' ? await reply.send({ id: request.params.id, found: false, why }) : await reply.type(TEXT).send(`${why}\n`)
    }
    if (format === 'json') return await reply.send(story)
    if (format === 'text') return await reply.type(TEXT).send(storyText(story))
    return await reply.type(HTML).send(renderStory(story, pageOptions))
  })
}

const TEXT = 'text/plain; charset=utf-8'
const HTML = 'text/html; charset=utf-8'

/** `?format=` when given, else the Accept header read as the error answers read it. */
function formatOf (request: FastifyRequest): 'json' | 'html' | 'text' {
  const query = request.query as Record<string, unknown> | undefined
  const asked = query?.format
  if (asked === 'json' || asked === 'html' || asked === 'text') return asked
  const format = negotiate(request.headers.accept)
  return format === 'problem' ? 'json' : format
}

/** Prometheus text at metrics.path, as an ordinary route (guard it with a hook, as the page). */
export function registerMetrics (app: FastifyInstance, path: string, metrics: Metrics): void {
  app.get(path, async function prometheusMetrics (_request, reply) {
    const text = await metrics.registry.metrics()
    return await reply.type(metrics.registry.contentType).header('cache-control', 'no-store').send(text)
  })
}
