import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import * as campaigns from '../../campaigns/index.ts';
import * as messaging from '../../messaging/index.ts';
import { pageRequest } from '../../shared/pagination.ts';
import * as tenancy from '../../tenancy/index.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id, PageOf, PageQuery } from '../schemas.ts';

const Timestamp = Type.String({ format: 'date-time' });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const Name = Type.String({ minLength: 1, maxLength: 200 });

const Organization = Type.Object({
  id: Type.String(),
  name: Type.String(),
  frozen: Type.Boolean(),
  created_at: Timestamp,
});
const Workspace = Type.Object({
  id: Type.String(),
  organization_id: Type.String(),
  name: Type.String(),
  home_country: Type.String(),
  timezone: Type.String(),
  sms_enabled: Type.Boolean(),
  created_at: Timestamp,
});
const Scope = Type.Union([
  Type.Literal('operator'),
  Type.Literal('organization'),
  Type.Literal('workspace'),
]);
const ApiKey = Type.Object({
  id: Type.String(),
  prefix: Type.String(),
  name: Type.String(),
  scope: Scope,
  organization_id: Nullable(Type.String()),
  workspace_id: Nullable(Type.String()),
  created_at: Timestamp,
  revoked_at: Nullable(Timestamp),
});
const CreatedKey = Type.Object({
  key: Type.String({ description: 'The API key. Shown once: only its hash is stored.' }),
  api_key: ApiKey,
});

export function tenancyRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  return async (app) => {
    app.get(
      '/v1/me',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'The calling key, its organization and workspace',
          response: {
            200: Type.Object({
              key_id: Type.String(),
              scope: Scope,
              organization: Type.Union([Organization, Type.Null()]),
              workspace: Type.Union([Workspace, Type.Null()]),
            }),
          },
        },
      },
      async (request) => tenancy.me(db, actorOf(request)),
    );

    app.post(
      '/v1/organizations',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'Create an organization and its first admin key (operator)',
          body: Type.Object(
            { name: Name, admin_key_name: Type.Optional(Name) },
            { additionalProperties: false },
          ),
          response: { 201: Type.Object({ organization: Organization, admin_key: CreatedKey }) },
        },
      },
      async (request, reply) => {
        const created = await tenancy.createOrganization(db, actorOf(request), request.body);
        return reply.code(201).send(created);
      },
    );

    app.get(
      '/v1/organizations/:id',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'One organization',
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          response: { 200: Organization },
        },
      },
      async (request) => tenancy.getOrganization(db, actorOf(request), request.params.id),
    );

    app.post(
      '/v1/workspaces',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'Create a workspace (organization admin)',
          body: Type.Object(
            {
              name: Name,
              home_country: Type.Optional(
                Type.String({ pattern: '^[A-Z]{2}$', description: 'ISO 3166-1 alpha-2' }),
              ),
              timezone: Type.Optional(
                Type.String({ minLength: 1, maxLength: 64, description: 'IANA zone' }),
              ),
              organization_id: Type.Optional(Id('org')),
            },
            { additionalProperties: false },
          ),
          response: { 201: Workspace },
        },
      },
      async (request, reply) => {
        const ws = await tenancy.createWorkspace(db, actorOf(request), request.body);
        return reply.code(201).send(ws);
      },
    );

    app.get(
      '/v1/workspaces',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'List workspaces (organization admin), newest first',
          querystring: Type.Object(
            { ...PageQuery, organization_id: Type.Optional(Id('org')) },
            { additionalProperties: false },
          ),
          response: { 200: PageOf(Workspace) },
        },
      },
      async (request) =>
        tenancy.listWorkspaces(
          db,
          actorOf(request),
          pageRequest(request.query),
          request.query.organization_id,
        ),
    );

    app.get(
      '/v1/workspaces/:id',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'One workspace',
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          response: { 200: Workspace },
        },
      },
      async (request) => tenancy.getWorkspace(db, actorOf(request), request.params.id),
    );

    app.patch(
      '/v1/workspaces/:id',
      {
        schema: {
          tags: ['tenancy'],
          summary:
            "Turn the workspace's SMS off or on (organization admin; audited). Off: no claim of the workspace's sends that starts after the commit succeeds, its waiting messages are blocked with `workspace_disabled` and its campaigns pause with that reason; on: those campaigns resume and the blocked messages are dispatched again",
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          body: Type.Object(
            {
              sms_enabled: Type.Boolean(),
              reason: Type.Optional(Type.String({ minLength: 1, maxLength: 500, description: 'Kept in the audit log' })),
            },
            { additionalProperties: false },
          ),
          response: { 200: Workspace },
        },
      },
      async (request) => {
        const actor = actorOf(request);
        return db.transaction().execute(async (trx) => {
          const { workspace, changed } = await tenancy.setWorkspaceSms(trx, actor, request.params.id, {
            enabled: request.body.sms_enabled,
            reason: request.body.reason ?? null,
          });
          if (changed && workspace.sms_enabled) {
            await campaigns.resumeCampaignsForWorkspace(trx, workspace.id, actor.principal.keyId);
            await messaging.scheduleDispatch(trx, workspace.organization_id, { includeBlocked: true });
          }
          return workspace;
        });
      },
    );

    app.post(
      '/v1/api-keys',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'Create an API key; the key is in the response only',
          body: Type.Object(
            {
              name: Name,
              scope: Scope,
              organization_id: Type.Optional(Id('org')),
              workspace_id: Type.Optional(Id('ws')),
            },
            { additionalProperties: false },
          ),
          response: { 201: CreatedKey },
        },
      },
      async (request, reply) => {
        const created = await tenancy.createApiKey(db, actorOf(request), request.body);
        return reply.code(201).send(created);
      },
    );

    app.get(
      '/v1/api-keys',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'List API keys (without their secrets), newest first',
          querystring: Type.Object(
            {
              ...PageQuery,
              organization_id: Type.Optional(Id('org')),
              workspace_id: Type.Optional(Id('ws')),
            },
            { additionalProperties: false },
          ),
          response: { 200: PageOf(ApiKey) },
        },
      },
      async (request) => {
        const { organization_id, workspace_id } = request.query;
        return tenancy.listApiKeys(db, actorOf(request), pageRequest(request.query), {
          ...(organization_id !== undefined && { organization_id }),
          ...(workspace_id !== undefined && { workspace_id }),
        });
      },
    );

    app.post(
      '/v1/api-keys/:id/revoke',
      {
        schema: {
          tags: ['tenancy'],
          summary: 'Revoke an API key',
          description:
            'The key stops working at once on the API process that took the revocation, and within 2 seconds on any other API process (each keeps a found key for 2 s).',
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          response: { 200: ApiKey },
        },
      },
      async (request) => tenancy.revokeApiKey(db, actorOf(request), request.params.id),
    );
  };
}
