import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { sql } from 'kysely';
import { Type } from 'typebox';
import * as messaging from '../../messaging/index.ts';
import * as billing from '../../payments/index.ts';
import { DomainError, notFound } from '../../shared/errors.ts';
import * as tenancy from '../../tenancy/index.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id } from '../schemas.ts';
import { sendProblem } from '../problem.ts';

/**
 * Billing: Checkout for packs and plans, the return URL, the Stripe webhook
 * (raw body, signature checked with the official SDK), the billing view,
 * and operator freeze / unfreeze / plan change (audited).
 */
export function billingRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  const need = (): billing.BillingDeps => {
    if (deps.billing === undefined) throw new DomainError('service_unavailable', 'Payments are not configured.');
    return deps.billing;
  };
  return async (app) => {
    // The webhook needs the exact bytes Stripe signed: its own scope with a raw-body parser.
    await app.register(async (scope) => {
      scope.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit: 1024 * 1024 }, (_req, body, done) => done(null, body));
      scope.post('/webhooks/stripe', { config: { public: true }, schema: { hide: true } }, async (request, reply) => {
        const raw = request.body as Buffer;
        const sig = request.headers['stripe-signature'];
        const event = Buffer.isBuffer(raw) ? need().payments.verifyWebhook(raw, typeof sig === 'string' ? sig : undefined) : undefined;
        if (event === undefined) {
          return sendProblem(reply, request, 'validation_error', { status: 400, detail: 'Stripe-Signature does not verify this body (or its timestamp is too old).' });
        }
        const outcome = await billing.handleStripeEvent(need(), event);
        request.log.info({ event_id: event.id, type: event.type, outcome }, 'stripe event');
        return reply.code(200).send({ received: true });
      });
    });

    app.post(
      '/v1/billing/checkout',
      {
        schema: {
          tags: ['billing'],
          summary: 'Start a Stripe Checkout for a credit pack or a plan (organization admin); returns the URL to send the customer to',
          querystring: Type.Object({ organization_id: Type.Optional(Id('org')) }, { additionalProperties: false }),
          body: Type.Object(
            {
              kind: Type.Union([Type.Literal('pack'), Type.Literal('plan')]),
              item: Type.String({ minLength: 1, maxLength: 40, description: 'pack: starter | standard | large; plan: pro | ultra' }),
              success_url: Type.Optional(Type.String({ format: 'uri', maxLength: 2000 })),
              cancel_url: Type.Optional(Type.String({ format: 'uri', maxLength: 2000 })),
            },
            { additionalProperties: false },
          ),
          response: { 201: Type.Object({ session_id: Type.String(), url: Type.String() }) },
        },
      },
      async (request, reply) => {
        const actor = actorOf(request);
        tenancy.requireOrgAdmin(actor.principal, request.query.organization_id);
        const org = await tenancy.readableOrganization(db, actor, request.query.organization_id);
        return reply.code(201).send(await billing.startCheckout(need(), org, request.body));
      },
    );

    app.get(
      '/billing/return',
      { config: { public: true }, schema: { hide: true, querystring: Type.Object({ session_id: Type.Optional(Type.String({ maxLength: 200 })), cancelled: Type.Optional(Type.String()) }) } },
      async (request, reply) => {
        const id = request.query.session_id;
        const result = id ? await billing.fulfillSession(need(), id) : 'cancelled';
        const text = result === 'fulfilled' || result === 'already_fulfilled' ? 'Payment received: thank you.' : result === 'not_paid' ? 'Payment not completed yet.' : 'Nothing to do.';
        return reply.type('text/html').send(`<!doctype html><meta charset="utf-8"><title>Credence</title><p>${text}</p>`);
      },
    );

    app.get(
      '/v1/billing',
      {
        schema: {
          tags: ['billing'],
          summary: 'Plan, subscription state, period end, packs bought, next renewal',
          querystring: Type.Object({ organization_id: Type.Optional(Id('org')) }, { additionalProperties: false }),
        },
      },
      async (request) => {
        const org = await tenancy.readableOrganization(db, actorOf(request), request.query.organization_id);
        const { rows: subs } = await sql<{ plan: string; status: string; current_period_end: Date | null; grace_until: Date | null }>`
          select plan, status, current_period_end, grace_until from subscriptions where organization_id = ${org}`.execute(db);
        const { rows: packs } = await sql<{ item: string; credits: number; amount: number; currency: string; fulfilled_at: Date }>`
          select item, credits, amount, currency, fulfilled_at from checkout_sessions
          where organization_id = ${org} and kind = 'pack' and status = 'fulfilled' order by fulfilled_at desc limit 100`.execute(db);
        const s = subs[0];
        const { rows: ok } = await sql<{ ok: boolean; frozen: boolean }>`select credence_subscription_ok(${org}) as ok,
          (select frozen_at is not null from organizations where id = ${org}) as frozen`.execute(db);
        return {
          organization_id: org,
          plan: s?.plan ?? 'free',
          subscription: s ? { status: s.status, period_end: s.current_period_end?.toISOString() ?? null, grace_until: s.grace_until?.toISOString() ?? null } : null,
          next_renewal: s && ['active', 'trialing', 'past_due'].includes(s.status) ? (s.current_period_end?.toISOString() ?? null) : null,
          can_send: ok[0]!.ok && !ok[0]!.frozen,
          packs_bought: packs.map((p) => ({ ...p, fulfilled_at: p.fulfilled_at.toISOString() })),
        };
      },
    );

    app.post(
      '/v1/organizations/:id/plan',
      {
        schema: {
          tags: ['operator'],
          summary: "Operator plan change (audited): the subscription's plan changes now, its allowance at the next renewal",
          params: Type.Object({ id: Id('org') }),
          body: Type.Object({ plan: Type.String({ minLength: 1, maxLength: 40 }), reason: Type.String({ minLength: 1, maxLength: 500 }) }, { additionalProperties: false }),
        },
      },
      async (request) => {
        const actor = actorOf(request);
        tenancy.requireOperator(actor.principal);
        const org = await tenancy.readableOrganization(db, actor, request.params.id);
        return billing.changePlan(need(), org, request.body.plan, (trx, result) =>
          tenancy.recordAudit(trx, actor, {
            action: 'organization.plan_change',
            organizationId: org,
            targetType: 'organization',
            targetId: org,
            reason: request.body.reason,
            details: result,
          }),
        );
      },
    );

    for (const action of ['freeze', 'unfreeze'] as const) {
      app.post(
        `/v1/organizations/:id/${action}`,
        {
          schema: {
            tags: ['operator'],
            summary: action === 'freeze' ? 'Freeze an organization: no claim succeeds from now on (audited)' : 'Unfreeze an organization (audited)',
            params: Type.Object({ id: Id('org') }),
            body: Type.Object({ reason: Type.String({ minLength: 1, maxLength: 500 }) }, { additionalProperties: false }),
          },
        },
        async (request) => {
          const actor = actorOf(request);
          tenancy.requireOperator(actor.principal);
          const org = await tenancy.readableOrganization(db, actor, request.params.id);
          const { reason } = request.body;
          await db.transaction().execute(async (trx) => {
            if (action === 'freeze') {
              await sql`update organizations set frozen_at = coalesce(frozen_at, now()), frozen_by = 'operator' where id = ${org}`.execute(trx);
            } else {
              // an open payment dispute keeps its own freeze
              await sql`update organizations set
                  frozen_at = case when exists (select 1 from disputes d where d.organization_id = ${org} and d.status = 'open') then coalesce(frozen_at, now()) end,
                  frozen_by = case when exists (select 1 from disputes d where d.organization_id = ${org} and d.status = 'open') then 'dispute' end
                where id = ${org}`.execute(trx);
              await messaging.scheduleDispatch(trx, org, { includeBlocked: true });
            }
            await tenancy.recordAudit(trx, actor, { action: `organization.${action}`, organizationId: org, targetType: 'organization', targetId: org, reason });
          });
          const found = await tenancy.getOrganization(db, actor, org).catch(() => undefined);
          if (found === undefined) throw notFound('Organization');
          return found;
        },
      );
    }
  };
}
