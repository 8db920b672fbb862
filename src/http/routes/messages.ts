import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import * as messaging from '../../messaging/index.ts';
import { DomainError, notFound } from '../../shared/errors.ts';
import { parseDateTime } from '../../shared/dates.ts';
import { pageRequest, toPage } from '../../shared/pagination.ts';
import { canSeeWorkspace, type Principal, requireWorkspaceKey } from '../../tenancy/index.ts';
import type { Db } from '../../db/db.ts';
import type { AppDeps } from '../app.ts';
import { workspaceScope } from './consent.ts';
import { actorOf } from '../auth.ts';
import { Id, PageOf, PageQuery } from '../schemas.ts';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const Status = Type.Unsafe<messaging.MessageStatus>(Type.String({ enum: [...messaging.MESSAGE_STATUSES] }));
const Purpose = Type.Unsafe<messaging.Purpose>(Type.String({ enum: [...messaging.PURPOSES] }));

const Message = Type.Object({
  id: Type.String(),
  workspace_id: Type.String(),
  to: Type.String({ description: 'E.164' }),
  from: Type.String(),
  body: Type.String(),
  purpose: Purpose,
  producer: Type.String(),
  campaign_id: Nullable(Type.String()),
  country: Type.String(),
  encoding: Type.String(),
  segments: Type.Integer(),
  cost: Type.Integer({ description: 'credits' }),
  status: Status,
  status_reason: Nullable(Type.String()),
  attempts: Type.Integer(),
  send_at: Type.String(),
  next_attempt_at: Nullable(Type.String()),
  provider_sid: Nullable(Type.String()),
  error_code: Type.Union([Type.Integer(), Type.Null()]),
  created_at: Type.String(),
  sent_at: Nullable(Type.String()),
  terminal_at: Nullable(Type.String()),
});

const Event = Type.Object({
  event: Type.String(),
  from_status: Nullable(Type.String()),
  to_status: Type.String(),
  reason: Nullable(Type.String()),
  details: Type.Unknown(),
  at: Type.String(),
});

function toApi(m: messaging.MessageRow) {
  return {
    id: m.id,
    workspace_id: m.workspace_id,
    to: m.to_number,
    from: m.from_number,
    body: m.body,
    purpose: m.purpose,
    producer: m.producer,
    campaign_id: m.campaign_id,
    country: m.country,
    encoding: m.encoding,
    segments: m.segments,
    cost: m.cost,
    status: m.status,
    status_reason: m.status_reason,
    attempts: m.attempts,
    send_at: m.send_at.toISOString(),
    next_attempt_at: m.next_attempt_at?.toISOString() ?? null,
    provider_sid: m.provider_sid,
    error_code: m.error_code,
    created_at: m.created_at.toISOString(),
    sent_at: m.sent_at?.toISOString() ?? null,
    terminal_at: m.terminal_at?.toISOString() ?? null,
  };
}

async function listScope(db: Db, p: Principal, workspaceId: string | undefined): Promise<{ organizationId: string; workspaceId?: string }> {
  switch (p.scope) {
    case 'workspace':
    case 'organization':
      // a workspace filter names one of the key's own workspaces, or is a 404 (as every other route)
      return workspaceId === undefined && p.scope === 'organization' ? { organizationId: p.organizationId } : workspaceScope(db, p, workspaceId);
    case 'operator':
      throw new DomainError('forbidden', 'Messages are listed with an organization or workspace key.');
    default: {
      const never: never = p;
      throw new Error(`unhandled principal ${String(never)}`);
    }
  }
}

export function messageRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  return async (app) => {
    // immediate messages are stored in batches, one commit for many requests
    const inserts = messaging.createIntakeBatcher(deps.pipelineDb);
    // and wait while the organization's API backlog is at its limit
    const admission = messaging.createAdmission((org, limit) => messaging.countApiBacklog(deps.pipelineDb, org, limit), {
      limit: deps.intake?.backlogLimit ?? 0,
      maxWaitMs: deps.intake?.backlogWaitMs ?? 10_000,
    });
    app.addHook('onClose', () => {
      admission.close();
      return inserts.close();
    });
    app.post(
      '/v1/messages',
      {
        schema: {
          tags: ['messages'],
          summary: 'Send one SMS (workspace key). Accepted for sending: 202; the same Idempotency-Key returns the same message.',
          description:
            "While the organization's API messages due and not yet at the carrier number INTAKE_BACKLOG_LIMIT, the request waits for room; after INTAKE_BACKLOG_WAIT_MS it is a 429 problem (reason backlog_full) with Retry-After, and nothing is stored.",
          headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255 })) }),
          body: Type.Object(
            {
              to: Type.String({ minLength: 1, maxLength: 32, description: 'E.164, e.g. +14155550100' }),
              body: Type.String({ minLength: 1, maxLength: messaging.MAX_BODY }),
              purpose: Purpose,
              from: Type.Optional(Type.String({ minLength: 1, maxLength: 32, description: 'one of the workspace sender numbers' })),
              send_at: Type.Optional(Type.String({ format: 'date-time' })),
              timezone: Type.Optional(
                Type.String({ minLength: 1, maxLength: 64, description: "the recipient's IANA time zone, if known (quiet hours); else derived from the number" }),
              ),
            },
            { additionalProperties: false },
          ),
          response: { 200: Message, 202: Message },
        },
      },
      async (request, reply) => {
        const p = requireWorkspaceKey(actorOf(request).principal);
        const intake = await messaging.createApiMessage(
          db,
          { organizationId: p.organizationId, workspaceId: p.workspaceId },
          request.body,
          request.headers['idempotency-key'],
          { insert: inserts.insert, admit: admission.enter },
        );
        return reply.code(intake.created ? 202 : 200).send(toApi(intake.message));
      },
    );

    app.get(
      '/v1/messages/:id',
      {
        schema: {
          tags: ['messages'],
          summary: 'One message with its full event timeline',
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          response: { 200: Type.Intersect([Message, Type.Object({ events: Type.Array(Event) })]) },
        },
      },
      async (request) => {
        const m = await messaging.findMessage(db, request.params.id);
        if (m === undefined || !canSeeWorkspace(actorOf(request).principal, m.organization_id, m.workspace_id)) {
          throw notFound('Message');
        }
        const events = await messaging.listEvents(db, m.id);
        return {
          ...toApi(m),
          events: events.map((e) => ({ ...e, details: e.details ?? null, at: e.at.toISOString() })),
        };
      },
    );

    app.get(
      '/v1/messages',
      {
        schema: {
          tags: ['messages'],
          summary: 'List messages, newest first, with filters',
          querystring: Type.Object(
            {
              ...PageQuery,
              status: Type.Optional(Type.Array(Status)),
              purpose: Type.Optional(Type.Array(Purpose)),
              campaign_id: Type.Optional(Type.String({ maxLength: 64 })),
              to: Type.Optional(Type.String({ maxLength: 32 })),
              workspace_id: Type.Optional(Id('ws')),
              from: Type.Optional(Type.String({ format: 'date-time' })),
              until: Type.Optional(Type.String({ format: 'date-time' })),
            },
            { additionalProperties: false },
          ),
          response: { 200: PageOf(Message) },
        },
      },
      async (request) => {
        const q = request.query;
        const scope = await listScope(db, actorOf(request).principal, q.workspace_id);
        let to: string | undefined;
        if (q.to !== undefined) {
          const parsed = messaging.parsePhone(q.to);
          if (!parsed.ok) throw new DomainError('validation_error', `to: ${parsed.reason}`, { fields: [{ field: 'to', reason: parsed.reason }] });
          to = parsed.e164;
        }
        const from = q.from ? parseDateTime('from', q.from) : undefined;
        const until = q.until ? parseDateTime('until', q.until) : undefined;
        if (from !== undefined && until !== undefined && from >= until) {
          throw new DomainError('validation_error', 'from: must be before until', { fields: [{ field: 'from', reason: 'must be before until' }] });
        }
        const page = pageRequest(q);
        const rows = await messaging.listMessages(
          db,
          scope,
          {
            ...(q.status && { statuses: q.status }),
            ...(q.purpose && { purposes: q.purpose }),
            ...(q.campaign_id && { campaignId: q.campaign_id }),
            ...(to && { to }),
            ...(from && { from }),
            ...(until && { until }),
          },
          page,
        );
        return toPage(rows, page, (r) => r.id, toApi);
      },
    );
  };
}
