// Errors Fastify raises before any route runs (a URL it cannot decode, a path parameter over
// maxParamLength) skip every scope's error handler: Fastify answers them itself, in its own
// JSON, unless the app passes `frameworkErrors` when it creates the server. A plugin cannot set
// that option, so the package exports one, and the plugin leaves its handler on the instance.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ErrorHandlers } from './handlers.js'

const kGatewayErrorHandler = Symbol('fastify-upstream.errorHandler')

type WithHandler = FastifyInstance & { [kGatewayErrorHandler]?: ErrorHandlers['errorHandler'] }

/** Called by the plugin: the instance's framework errors are now answered by `handler`. */
export function setFrameworkErrorHandler (app: FastifyInstance, handler: ErrorHandlers['errorHandler']): void {
  app.decorate(kGatewayErrorHandler, handler)
}

/**
 * Pass as Fastify's `frameworkErrors` option: `Fastify({ frameworkErrors })`. Framework errors
 * then answer in the gateway's format, with its log record. Before the plugin is registered on
 * that instance, they get Fastify's usual answer.
 */
export function frameworkErrors (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const handler = (request.server as WithHandler)[kGatewayErrorHandler]
  if (handler !== undefined) {
    handler(error, request, reply)
    return
  }
  reply.code(error.statusCode ?? 400).send(error)
}
