import type { Selectable } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import type {
  ApiKeyScope,
  ApiKeysTable,
  OrganizationsTable,
  WorkspacesTable,
} from '../db/schema.ts';
import { newId } from '../shared/ids.ts';
import type { PageRequest } from '../shared/pagination.ts';

export type OrganizationRow = Selectable<OrganizationsTable>;
export type WorkspaceRow = Selectable<WorkspacesTable>;
export type ApiKeyRow = Selectable<ApiKeysTable>;

export async function insertOrganization(
  db: DbOrTx,
  input: { name: string },
): Promise<OrganizationRow> {
  return db
    .insertInto('organizations')
    .values({ id: newId('org'), name: input.name })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findOrganization(
  db: DbOrTx,
  id: string,
): Promise<OrganizationRow | undefined> {
  return db.selectFrom('organizations').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function insertWorkspace(
  db: DbOrTx,
  organizationId: string,
  input: { name: string; homeCountry: string; timezone: string },
): Promise<WorkspaceRow> {
  return db
    .insertInto('workspaces')
    .values({
      id: newId('ws'),
      organization_id: organizationId,
      name: input.name,
      home_country: input.homeCountry,
      timezone: input.timezone,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findWorkspace(
  db: DbOrTx,
  organizationId: string | undefined,
  id: string,
): Promise<WorkspaceRow | undefined> {
  let q = db.selectFrom('workspaces').selectAll().where('id', '=', id);
  if (organizationId !== undefined) q = q.where('organization_id', '=', organizationId);
  return q.executeTakeFirst();
}

/** Set a workspace's SMS switch; the row when it changed, undefined when it already was so. */
export async function setWorkspaceSmsEnabled(db: DbOrTx, id: string, enabled: boolean): Promise<WorkspaceRow | undefined> {
  return db.updateTable('workspaces').set({ sms_enabled: enabled }).where('id', '=', id).where('sms_enabled', '<>', enabled).returningAll().executeTakeFirst();
}

export async function listWorkspaces(
  db: DbOrTx,
  organizationId: string,
  page: PageRequest,
): Promise<WorkspaceRow[]> {
  let q = db
    .selectFrom('workspaces')
    .selectAll()
    .where('organization_id', '=', organizationId)
    .orderBy('id', 'desc')
    .limit(page.limit + 1);
  if (page.before !== undefined) q = q.where('id', '<', page.before);
  return q.execute();
}

export async function insertApiKey(
  db: DbOrTx,
  input: {
    prefix: string;
    hash: Buffer;
    scope: ApiKeyScope;
    organizationId: string | null;
    workspaceId: string | null;
    name: string;
    createdBy: string | null;
  },
): Promise<ApiKeyRow> {
  return db
    .insertInto('api_keys')
    .values({
      id: newId('key'),
      prefix: input.prefix,
      key_hash: input.hash,
      scope: input.scope,
      organization_id: input.organizationId,
      workspace_id: input.workspaceId,
      name: input.name,
      created_by: input.createdBy,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findApiKeyByPrefix(
  db: DbOrTx,
  prefix: string,
): Promise<ApiKeyRow | undefined> {
  return db.selectFrom('api_keys').selectAll().where('prefix', '=', prefix).executeTakeFirst();
}

export async function findApiKey(
  db: DbOrTx,
  organizationId: string | undefined,
  id: string,
): Promise<ApiKeyRow | undefined> {
  let q = db.selectFrom('api_keys').selectAll().where('id', '=', id);
  if (organizationId !== undefined) q = q.where('organization_id', '=', organizationId);
  return q.executeTakeFirst();
}

export async function listApiKeys(
  db: DbOrTx,
  filter: { organizationId: string | null; workspaceId?: string },
  page: PageRequest,
): Promise<ApiKeyRow[]> {
  let q = db
    .selectFrom('api_keys')
    .selectAll()
    .orderBy('id', 'desc')
    .limit(page.limit + 1);
  q =
    filter.organizationId === null
      ? q.where('scope', '=', 'operator')
      : q.where('organization_id', '=', filter.organizationId);
  if (filter.workspaceId !== undefined) q = q.where('workspace_id', '=', filter.workspaceId);
  if (page.before !== undefined) q = q.where('id', '<', page.before);
  return q.execute();
}

export async function markApiKeyRevoked(db: DbOrTx, id: string): Promise<ApiKeyRow | undefined> {
  return db
    .updateTable('api_keys')
    .set({ revoked_at: new Date() })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .returningAll()
    .executeTakeFirst();
}

export async function countOperatorKeys(db: DbOrTx): Promise<number> {
  const row = await db
    .selectFrom('api_keys')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('scope', '=', 'operator')
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function insertAudit(
  db: DbOrTx,
  entry: {
    actorKeyId: string | null;
    actorScope: string;
    action: string;
    organizationId: string | null;
    targetType: string;
    targetId: string;
    reason?: string | null;
    details?: Record<string, unknown>;
    requestId?: string | null;
  },
): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({
      id: newId('aud'),
      actor_key_id: entry.actorKeyId,
      actor_scope: entry.actorScope,
      action: entry.action,
      organization_id: entry.organizationId,
      target_type: entry.targetType,
      target_id: entry.targetId,
      reason: entry.reason ?? null,
      details: JSON.stringify(entry.details ?? {}),
      request_id: entry.requestId ?? null,
    })
    .execute();
}
