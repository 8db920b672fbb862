import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { pendingMigrations } from '../../db/migrate.ts';
import type { AppDeps } from '../app.ts';
import { sendProblem } from '../problem.ts';

export function healthRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get(
      '/healthz',
      {
        config: { public: true },
        schema: {
          tags: ['health'],
          summary: 'The process is up',
          response: { 200: Type.Object({ status: Type.Literal('ok') }) },
        },
      },
      async () => ({ status: 'ok' as const }),
    );

    app.get(
      '/readyz',
      {
        config: { public: true },
        schema: {
          tags: ['health'],
          summary: 'The database answers and its schema is current',
          response: { 200: Type.Object({ status: Type.Literal('ready') }) },
        },
      },
      async (request, reply) => {
        try {
          const pending = await pendingMigrations(deps.pool);
          if (pending.length > 0) {
            return sendProblem(reply, request, 'service_unavailable', {
              detail: `Migrations not applied: ${pending.join(', ')}. Run "credence migrate".`,
            });
          }
        } catch (err) {
          request.log.warn({ err }, 'readiness check failed');
          return sendProblem(reply, request, 'service_unavailable', {
            detail: 'The database is not reachable.',
          });
        }
        return { status: 'ready' as const };
      },
    );
  };
}
