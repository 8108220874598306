// Fastify's own errors on the gateway's routes (a bad URL, a rate limit, a route with no such
// method, an unknown path) go through the same record, page, header and log as upstream ones.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { classifyRequestError, ensureSentence, findCode } from './classify.js'
import { makeFailure, type Failure } from './failure.js'
import { logFailure } from './log.js'
import { retryAfterOf, sendFailure, type ResponderSettings } from './respond.js'

export interface ErrorHandlers {
  /** Log the failure once and answer with it: the one way a failure leaves the gateway. */
  answer: (request: FastifyRequest, reply: FastifyReply, failure: Failure) => void
  errorHandler: (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => void
  notFoundHandler: (request: FastifyRequest, reply: FastifyReply) => void
  /** What the answers are built with (for answers made outside a request's reply). */
  settings: ResponderSettings
}

/** Seconds a client refused for a failed rate limit store waits: Redis reconnects within one. */
const STORE_RETRY_AFTER = 1

export function createErrorHandlers (settings: ResponderSettings, pool: string | null): ErrorHandlers {
  const answer = (request: FastifyRequest, reply: FastifyReply, failure: Failure): void => {
    logFailure(request, failure)
    sendFailure(request, reply, failure, settings)
  }
  return {
    answer,
    settings,
    errorHandler (error, request, reply) {
      const { error: type, status } = classifyRequestError(error.statusCode, error.code)
      const client = status < 500
      const store = type === 'rate_limit_store_unavailable'
      answer(request, reply, makeFailure(type, {
        phase: 'route',
        pool,
        status,
        ms: reply.elapsedTime,
        // The store's own failure (ECONNREFUSED, a timeout) says more than the wrapper's code.
        cause: store ? findCode(error.cause) ?? error.code : error.code ?? null,
        // A client error's message is Fastify's (or a plugin's) words about the request: safe
        // to show. Anything else may carry internals: the record keeps it, the public gets the
        // taxonomy's words.
        ...(client && error.message !== '' ? { detail: ensureSentence(error.message) } : {}),
        why: client ? `Fastify said: ${error.message}` : `The error was: ${error.message}`,
        retryAfter: store ? STORE_RETRY_AFTER : retryAfterOf(reply.getHeader('retry-after'))
      }))
    },
    notFoundHandler (request, reply) {
      answer(request, reply, makeFailure('http_request_error', {
        phase: 'route',
        pool,
        status: 404,
        ms: reply.elapsedTime,
        detail: pool === null ? 'Nothing is served at this address.' : `This service does not answer ${request.method} requests here.`,
        why: pool === null
          ? `No route matches ${request.method} ${request.url.split('?')[0]!}: check the path against the routes[].prefix options.`
          : `The route for pool "${pool}" does not list ${request.method} in routes[].methods.`
      }))
    }
  }
}
