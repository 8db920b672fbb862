import type { FastifyRequest } from 'fastify';
import type { Db } from '../db/db.ts';
import { DomainError } from '../shared/errors.ts';
import { type Actor, authenticate, type Principal } from '../tenancy/index.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** Routes open without an API key (health, docs, signed webhooks). */
    public?: boolean;
  }
}

export function authHook(db: Db) {
  return async (request: FastifyRequest): Promise<void> => {
    if (request.routeOptions.config?.public === true || request.routeOptions.url === undefined)
      return;
    request.principal = await authenticate(db, request.headers.authorization);
  };
}

export function actorOf(request: FastifyRequest): Actor {
  if (request.principal === null) throw new DomainError('unauthenticated');
  return { principal: request.principal, requestId: request.id };
}
