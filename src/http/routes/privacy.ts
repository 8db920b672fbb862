import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import * as privacy from '../../privacy/index.ts';
import * as sendrules from '../../sendrules/index.ts';
import { forgetWorkspace } from '../../messaging/intake.ts';
import { notFound } from '../../shared/errors.ts';
import { canSeeWorkspace, recordAudit, requireOrgAdmin } from '../../tenancy/index.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id } from '../schemas.ts';
import { phoneParam, workspaceScope } from './consent.ts';

const WindowText = Type.Object(
  { start: Type.String({ pattern: '^\\d{2}:\\d{2}$' }), end: Type.String({ pattern: '^\\d{2}:\\d{2}$' }) },
  { additionalProperties: false },
);
const Cap = Type.Object({ count: Type.Integer({ minimum: 1 }), hours: Type.Integer({ minimum: 1, maximum: 744 }) }, { additionalProperties: false });
const perPurpose = <T extends ReturnType<typeof Type.Object>>(t: T, description: string) =>
  Type.Object(Object.fromEntries(sendrules.RULE_PURPOSES.map((p) => [p, Type.Optional(Type.Union([Type.Null(), t]))])), {
    additionalProperties: false,
    description,
  });

const RulesPatch = Type.Object(
  {
    allowed_countries: Type.Optional(
      Type.Union([Type.Null(), Type.Array(Type.String({ pattern: '^[A-Z]{2}$' }), { minItems: 1, maxItems: 250 })], {
        description: 'destination countries (ISO codes); null = the home country only',
      }),
    ),
    send_windows: Type.Optional(perPurpose(WindowText, 'local send window per purpose; null = back to the default')),
    frequency_caps: Type.Optional(perPurpose(Cap, 'at most count sends per phone per hours; null = no cap for that purpose')),
    hourly_cap: Type.Optional(Type.Union([Type.Null(), Type.Integer({ minimum: 0, maximum: 2_147_483_647 })], { description: 'transactional + appointment sends per hour; null = none' })),
    double_opt_in: Type.Optional(Type.Boolean()),
    // Null first: with type coercion on, a null would otherwise become 0 or "".
    help_text: Type.Optional(Type.Union([Type.Null(), Type.String({ minLength: 1, maxLength: 1600 })])),
    opt_in_prompt: Type.Optional(Type.Union([Type.Null(), Type.String({ minLength: 1, maxLength: 1600 })])),
  },
  { additionalProperties: false },
);

const Rules = Type.Object({
  workspace_id: Type.String(),
  settings: Type.Unknown({ description: 'what was set (absent = default)' }),
  effective: Type.Unknown({ description: 'what is in force, defaults filled in; legal limits (US, US states, France) narrow windows further' }),
});

/**
 * A workspace's sending rules (allow-list, send windows, caps, double
 * opt-in, keyword texts) and GDPR export / erasure of a phone number.
 */
export function privacyRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  const toApi = (workspaceId: string, r: sendrules.SendingRules) => ({ workspace_id: workspaceId, settings: r, effective: sendrules.effectiveRules(r) });
  return async (app) => {
    app.get(
      '/v1/workspaces/:id/sending-rules',
      {
        schema: {
          tags: ['sending rules'],
          summary: "A workspace's sending rules: destination countries, send windows, caps, double opt-in, keyword texts",
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          response: { 200: Rules },
        },
      },
      async (request) => {
        const p = actorOf(request).principal;
        const scope = await workspaceScope(db, p, request.params.id).catch(() => {
          throw notFound('Workspace');
        });
        if (!canSeeWorkspace(p, scope.organizationId, scope.workspaceId)) throw notFound('Workspace');
        const rules = await sendrules.readRules(db, scope.workspaceId);
        if (rules === undefined) throw notFound('Workspace');
        return toApi(scope.workspaceId, rules);
      },
    );

    app.patch(
      '/v1/workspaces/:id/sending-rules',
      {
        schema: {
          tags: ['sending rules'],
          summary: 'Change sending rules (organization admin). Takes effect at the next claim of every waiting message.',
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          body: RulesPatch,
          response: { 200: Rules },
        },
      },
      async (request) => {
        const actor = actorOf(request);
        const scope = await workspaceScope(db, actor.principal, request.params.id).catch(() => {
          throw notFound('Workspace');
        });
        requireOrgAdmin(actor.principal, scope.organizationId);
        const patch = sendrules.validateRulesPatch(request.body as sendrules.SendingRulesPatch);
        const updated = await db.transaction().execute(async (trx) => {
          const r = await sendrules.updateRules(trx, scope.workspaceId, patch);
          await recordAudit(trx, actor, {
            action: 'workspace.sending_rules.update',
            organizationId: scope.organizationId,
            targetType: 'workspace',
            targetId: scope.workspaceId,
            details: { patch },
          });
          return r;
        });
        if (updated === undefined) throw notFound('Workspace');
        forgetWorkspace(scope.workspaceId);
        return toApi(scope.workspaceId, updated);
      },
    );

    const WorkspaceQuery = Type.Object({ workspace_id: Type.Optional(Id('ws')) }, { additionalProperties: false });

    app.get(
      '/v1/privacy/phone-numbers/:phone',
      {
        schema: {
          tags: ['privacy'],
          summary: 'GDPR export: everything held about a phone number in the workspace (consents with evidence, messages with events, inbound texts, its contact with its lists, campaign snapshots)',
          params: Type.Object({ phone: Type.String({ maxLength: 40 }) }),
          querystring: WorkspaceQuery,
        },
      },
      async (request) => {
        const actor = actorOf(request);
        const scope = await workspaceScope(db, actor.principal, request.query.workspace_id);
        const phone = phoneParam(request.params.phone);
        const data = await privacy.exportPhone(db, scope.workspaceId, phone);
        await recordAudit(db, actor, {
          action: 'privacy.export',
          organizationId: scope.organizationId,
          targetType: 'workspace',
          targetId: scope.workspaceId,
          details: { messages: data.messages.length },
        });
        return data;
      },
    );

    app.post(
      '/v1/privacy/erasures',
      {
        schema: {
          tags: ['privacy'],
          summary:
            'GDPR erasure: pseudonymize a phone number (keyed hash) in messages, inbound texts and the consent log; cancel what is waiting. Ledger amounts stay intact; a later STOP still matches.',
          querystring: WorkspaceQuery,
          body: Type.Object({ phone: Type.String({ minLength: 1, maxLength: 32 }) }, { additionalProperties: false }),
          response: {
            200: Type.Object({
              phone_hash: Type.String(),
              messages_pseudonymized: Type.Integer(),
              messages_cancelled: Type.Integer(),
              consent_events_pseudonymized: Type.Integer(),
              inbound_pseudonymized: Type.Integer(),
              contacts_pseudonymized: Type.Integer(),
            }),
          },
        },
      },
      async (request) => {
        const actor = actorOf(request);
        const scope = await workspaceScope(db, actor.principal, request.query.workspace_id);
        const phone = phoneParam(request.body.phone);
        const report = await privacy.erasePhone(db, scope, phone);
        await recordAudit(db, actor, {
          action: 'privacy.erase',
          organizationId: scope.organizationId,
          targetType: 'phone_hash',
          targetId: report.phone_hash,
          details: { ...report },
        });
        return report;
      },
    );
  };
}
