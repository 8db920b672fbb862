import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { latestVerification } from '../../credits/index.ts';
import type { AppDeps } from '../app.ts';

/** Prometheus metrics. Values that live in the database are read at scrape time. */
export function metricsRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  return async (app) => {
    const register = new Registry();
    collectDefaultMetrics({ register, prefix: 'credence_' });
    new Gauge({
      name: 'credence_ledger_mismatches',
      help: 'Mismatches found by the latest ledger verification (must be 0)',
      registers: [register],
      async collect() {
        const latest = await latestVerification(deps.db).catch(() => undefined);
        this.set(latest?.mismatches ?? 0);
      },
    });
    new Gauge({
      name: 'credence_ledger_verified_at_seconds',
      help: 'Unix time of the latest ledger verification (0 if none yet)',
      registers: [register],
      async collect() {
        const latest = await latestVerification(deps.db).catch(() => undefined);
        this.set(latest === undefined ? 0 : latest.created_at.getTime() / 1000);
      },
    });
    app.get('/metrics', { config: { public: true }, schema: { hide: true } }, async (_request, reply) => {
      return reply.type(register.contentType).send(await register.metrics());
    });
  };
}
