import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import * as messaging from '../../messaging/index.ts';
import { DomainError, notFound, validationError } from '../../shared/errors.ts';
import * as tenancy from '../../tenancy/index.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id } from '../schemas.ts';

const Kind = Type.Union([Type.Literal('long_code'), Type.Literal('toll_free'), Type.Literal('short_code'), Type.Literal('alphanumeric')]);
const Sender = Type.Object({
  id: Type.String(),
  workspace_id: Type.String(),
  phone_number: Type.String(),
  kind: Kind,
  mps: Type.Number({ description: 'messages per second, held across all workers' }),
  is_default: Type.Boolean(),
  created_at: Type.String(),
});

/** The workspace a sender-number request acts on: a workspace key's own, or one an org admin names. */
async function targetWorkspace(deps: AppDeps, actor: tenancy.Actor, workspaceId: string | undefined) {
  const p = actor.principal;
  if (p.scope === 'workspace') {
    if (workspaceId !== undefined && workspaceId !== p.workspaceId) throw notFound('Workspace');
    return { organizationId: p.organizationId, workspaceId: p.workspaceId };
  }
  if (p.scope === 'operator') throw new DomainError('forbidden', 'Sender numbers are managed with an organization or workspace key.');
  if (workspaceId === undefined) throw validationError('workspace_id', 'is required with an organization key');
  const ws = await tenancy.getWorkspace(deps.db, actor, workspaceId);
  return { organizationId: ws.organization_id, workspaceId: ws.id };
}

export function senderRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post(
      '/v1/sender-numbers',
      {
        schema: {
          tags: ['messages'],
          summary: "Add a sender number to a workspace (the first one becomes the default)",
          body: Type.Object(
            {
              phone_number: Type.String({ minLength: 1, maxLength: 32 }),
              kind: Type.Optional(Kind),
              mps: Type.Optional(Type.Number({ minimum: 0.01, maximum: 10000, description: 'messages per second (at least 0.01: one every 100 s)' })),
              is_default: Type.Optional(Type.Boolean()),
              workspace_id: Type.Optional(Id('ws')),
            },
            { additionalProperties: false },
          ),
          response: { 201: Sender },
        },
      },
      async (request, reply) => {
        const scope = await targetWorkspace(deps, actorOf(request), request.body.workspace_id);
        const { workspace_id: _ignored, ...input } = request.body;
        const sender = await messaging.addSenderNumber(deps.db, scope, input);
        return reply.code(201).send(sender);
      },
    );

    app.get(
      '/v1/sender-numbers',
      {
        schema: {
          tags: ['messages'],
          summary: "A workspace's sender numbers",
          querystring: Type.Object({ workspace_id: Type.Optional(Id('ws')) }, { additionalProperties: false }),
          response: { 200: Type.Object({ data: Type.Array(Sender) }) },
        },
      },
      async (request) => {
        const scope = await targetWorkspace(deps, actorOf(request), request.query.workspace_id);
        return { data: await messaging.listSenderNumbers(deps.db, scope.workspaceId) };
      },
    );

    app.patch(
      '/v1/sender-numbers/:id',
      {
        schema: {
          tags: ['messages'],
          summary: "Change a sender number's rate or make it the default",
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          body: Type.Object(
            {
              mps: Type.Optional(Type.Number({ minimum: 0.01, maximum: 10000, description: 'messages per second (at least 0.01: one every 100 s)' })),
              is_default: Type.Optional(Type.Literal(true)),
              workspace_id: Type.Optional(Id('ws')),
            },
            { additionalProperties: false },
          ),
          response: { 200: Sender },
        },
      },
      async (request) => {
        const scope = await targetWorkspace(deps, actorOf(request), request.body.workspace_id);
        return messaging.updateSenderNumber(deps.db, scope.workspaceId, request.params.id, {
          ...(request.body.mps !== undefined && { mps: request.body.mps }),
          ...(request.body.is_default !== undefined && { is_default: request.body.is_default }),
        });
      },
    );
  };
}
