// The status page and the request lookup, as ordinary Fastify routes: the app's own hooks (an
// auth preHandler) run on them as on any other. Unless exposed for the request (status.expose,
// else errors.expose), they answer the gateway's 404, as if nothing were there.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config, StatusConfig } from '../options/config.js'
import type { UpstreamPool } from '../pool/pool.js'
import { createErrorHandlers } from '../errors/handlers.js'
import { isFullExposure } from '../errors/problem.js'
import { buildReport } from './report.js'
import { renderProbe, renderStatus, renderStory } from './page.js'
import { probe } from './probe.js'
import type { Recorder } from './recorder.js'
import type { Metrics } from './metrics.js'
import type { StoreHealth } from '../proxy/rate-limit-store.js'

const REFRESH_SECONDS = 10

export function registerStatus (app: FastifyInstance, config: Config, status: StatusConfig, pools: ReadonlyMap<string, UpstreamPool>, recorder: Recorder, rateLimitStore: StoreHealth | null = null): void {
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

  app.get(base === '' ? '/' : base, (request, reply) => {
    if (!allowed(request, reply)) return reply
    const report = buildReport(pools, recorder, config, status, Date.now(), rateLimitStore?.snapshot() ?? null)
    reply.header('cache-control', 'no-store')
    if (wantsJson(request)) return reply.send(report)
    return reply.type('text/html; charset=utf-8').send(renderStatus(report, pageOptions))
  })

  app.get<{ Querystring: { pool?: string, target?: string } }>(`${base}/probe`, async (request, reply) => {
    if (!allowed(request, reply)) return reply
    const { pool: name, target } = request.query
    const pool = name === undefined ? undefined : pools.get(name)
    reply.header('cache-control', 'no-store')
    if (pool === undefined || target === undefined) {
      return await reply.code(400).send({ error: `Give ?pool= (one of ${[...pools.keys()].join(', ')}) and ?target= (a target URL of that pool).` })
    }
    let result
    try {
      result = await probe(pool, target)
    } catch (err) {
      return await reply.code(400).send({ error: (err as Error).message })
    }
    if (wantsJson(request)) return await reply.send(result)
    return await reply.type('text/html; charset=utf-8').send(renderProbe(result, pageOptions))
  })

  app.get<{ Params: { id: string } }>(`${base}/requests/:id`, (request, reply) => {
    if (!allowed(request, reply)) return reply
    const story = recorder.story(request.params.id)
    reply.header('cache-control', 'no-store')
    if (story === null) {
      const why = `No failed or retried request with id "${request.params.id}" is kept: the last ${status.keep} are (status.keep), and a request that succeeded at the first try is not.`
      reply.code(404)
      return wantsJson(request) ? reply.send({ id: request.params.id, found: false, why }) : reply.type('text/plain; charset=utf-8').send(why)
    }
    if (wantsJson(request)) return reply.send(story)
    return reply.type('text/html; charset=utf-8').send(renderStory(story, pageOptions))
  })
}

function wantsJson (request: FastifyRequest): boolean {
  const query = request.query as Record<string, unknown> | undefined
  if (query?.format === 'json') return true
  const accept = request.headers.accept
  return accept !== undefined && accept.includes('application/json') && !accept.includes('text/html')
}

/** Prometheus text at metrics.path, as an ordinary route (guard it with a hook, as the page). */
export function registerMetrics (app: FastifyInstance, path: string, metrics: Metrics): void {
  app.get(path, async (_request, reply) => {
    const text = await metrics.registry.metrics()
    return await reply.type(metrics.registry.contentType).header('cache-control', 'no-store').send(text)
  })
}
