import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { sql } from 'kysely';
import { type Static, Type } from 'typebox';
import * as consent from '../../consent/index.ts';
import type { DbOrTx } from '../../db/db.ts';
import * as messaging from '../../messaging/index.ts';
import { notFound, validationError } from '../../shared/errors.ts';
import { parsePhone } from '../../shared/phone.ts';
import type { Principal } from '../../tenancy/index.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id } from '../schemas.ts';

const Purpose = Type.Unsafe<consent.ConsentPurpose>(Type.String({ enum: [...consent.CONSENT_PURPOSES] }));
const State = Type.Union([Type.Literal('granted'), Type.Literal('pending'), Type.Literal('revoked'), Type.Literal('none')]);
const StateMap = Type.Object({ marketing: State, transactional: State, appointment: State, cart_recovery: State });

const ConsentRecord = Type.Object(
  {
    phone: Type.String({ minLength: 1, maxLength: 32, description: 'E.164' }),
    purposes: Type.Array(Purpose, { minItems: 1, maxItems: 4 }),
    action: Type.Union([Type.Literal('granted'), Type.Literal('revoked')]),
    source: Type.Optional(Type.Unsafe<consent.ApiSource>(Type.String({ enum: [...consent.API_SOURCES], default: 'api' }))),
    evidence: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: 'free JSON: form id, IP, the text the person agreed to, …' }),
    ),
    occurred_at: Type.Optional(Type.String({ format: 'date-time', description: 'when the person acted (default now)' })),
  },
  { additionalProperties: false },
);

const Event = Type.Object({
  seq: Type.Integer(),
  purpose: Purpose,
  action: Type.String(),
  source: Type.String(),
  evidence: Type.Unknown(),
  actor: Type.String(),
  occurred_at: Type.String(),
  recorded_at: Type.String(),
});

const Recorded = Type.Object({
  phone: Type.String(),
  state: StateMap,
  events: Type.Array(Event),
  confirmation_message_id: Type.Union([Type.String(), Type.Null()]),
});

function eventToApi(e: consent.ConsentEventRow) {
  return {
    seq: e.seq,
    purpose: e.purpose,
    action: e.action,
    source: e.source,
    evidence: e.evidence,
    actor: e.actor,
    occurred_at: e.occurred_at.toISOString(),
    recorded_at: e.recorded_at.toISOString(),
  };
}

/**
 * The workspace a consent or privacy request acts on: a workspace key's own,
 * or (org admin, operator) the one named; another tenant's is a 404.
 */
export async function workspaceScope(
  db: DbOrTx,
  p: Principal,
  workspaceId: string | undefined,
): Promise<{ organizationId: string; workspaceId: string }> {
  if (p.scope === 'workspace') {
    if (workspaceId !== undefined && workspaceId !== p.workspaceId) throw notFound('Workspace');
    return { organizationId: p.organizationId, workspaceId: p.workspaceId };
  }
  if (workspaceId === undefined) throw validationError('workspace_id', 'is required with an organization or operator key');
  const { rows } = await sql<{ organization_id: string }>`select organization_id from workspaces where id = ${workspaceId}`.execute(db);
  const org = rows[0]?.organization_id;
  if (org === undefined || (p.scope === 'organization' && org !== p.organizationId)) throw notFound('Workspace');
  return { organizationId: org, workspaceId };
}

export function phoneParam(value: string, field = 'phone'): string {
  const parsed = parsePhone(value);
  if (!parsed.ok) throw validationError(field, parsed.reason);
  return parsed.e164;
}

const toValid = (items: readonly Static<typeof ConsentRecord>[], prefix: (i: number) => string) =>
  items.map((item, i) => consent.validateConsent({ ...item, source: item.source ?? 'api' }, prefix(i)));

export function consentRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  const WorkspaceQuery = Type.Object({ workspace_id: Type.Optional(Id('ws')) }, { additionalProperties: false });
  return async (app) => {
    app.post(
      '/v1/consents',
      {
        schema: {
          tags: ['consent'],
          summary: 'Record consent given or withdrawn for one number (appended to its log)',
          querystring: WorkspaceQuery,
          body: ConsentRecord,
          response: { 201: Recorded },
        },
      },
      async (request, reply) => {
        const actor = actorOf(request);
        const scope = await workspaceScope(db, actor.principal, request.query.workspace_id);
        const items = toValid([request.body], () => '');
        const [r] = await messaging.recordApiConsents(db, { ...scope, actor: actor.principal.keyId }, items);
        return reply.code(201).send({ ...r!, events: r!.events.map(eventToApi) });
      },
    );

    app.post(
      '/v1/consents/bulk',
      {
        schema: {
          tags: ['consent'],
          summary: 'Record up to 1,000 consent records at once: all are recorded, or none (a 422 names the first bad item)',
          querystring: WorkspaceQuery,
          body: Type.Object({ items: Type.Array(ConsentRecord, { minItems: 1, maxItems: 1000 }) }, { additionalProperties: false }),
          response: { 201: Type.Object({ data: Type.Array(Recorded) }) },
        },
      },
      async (request, reply) => {
        const actor = actorOf(request);
        const scope = await workspaceScope(db, actor.principal, request.query.workspace_id);
        const items = toValid(request.body.items, (i) => `items.${i}.`);
        const recorded = await messaging.recordApiConsents(db, { ...scope, actor: actor.principal.keyId }, items);
        return reply.code(201).send({ data: recorded.map((r) => ({ ...r, events: r.events.map(eventToApi) })) });
      },
    );

    app.get(
      '/v1/consents/:phone',
      {
        schema: {
          tags: ['consent'],
          summary: "A number's current consent per purpose, derived from its full history",
          params: Type.Object({ phone: Type.String({ maxLength: 40 }) }),
          querystring: WorkspaceQuery,
          response: { 200: Type.Object({ phone: Type.String(), state: StateMap, history: Type.Array(Event) }) },
        },
      },
      async (request) => {
        const actor = actorOf(request);
        const scope = await workspaceScope(db, actor.principal, request.query.workspace_id);
        const phone = phoneParam(request.params.phone);
        const current = await consent.currentConsent(db, scope.workspaceId, phone);
        return { phone, state: current.state, history: current.history.map(eventToApi) };
      },
    );
  };
}

