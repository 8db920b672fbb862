import { sql } from 'kysely';
import { IANAZone } from 'luxon';
import type { Db, DbOrTx } from '../db/db.ts';
import type { ApiKeyScope } from '../db/schema.ts';
import { DomainError, notFound, validationError } from '../shared/errors.ts';
import { type Page, type PageRequest, toPage } from '../shared/pagination.ts';
import { isCountryCode } from '../shared/phone.ts';
import { apiKeyMatches, bearerToken, generateApiKey, parseApiKey } from './apiKeys.ts';
import { canSeeWorkspace, type Principal, requireOperator, requireOrgAdmin } from './principal.ts';
import * as store from './tenancy.store.ts';

export interface Actor {
  principal: Principal;
  requestId?: string;
}

export interface Organization {
  id: string;
  name: string;
  frozen: boolean;
  created_at: string;
}

export interface Workspace {
  id: string;
  organization_id: string;
  name: string;
  home_country: string;
  timezone: string;
  sms_enabled: boolean;
  created_at: string;
}

export interface ApiKey {
  id: string;
  prefix: string;
  name: string;
  scope: ApiKeyScope;
  organization_id: string | null;
  workspace_id: string | null;
  created_at: string;
  revoked_at: string | null;
}

export function organizationRowToOrganization(row: store.OrganizationRow): Organization {
  return {
    id: row.id,
    name: row.name,
    frozen: row.frozen_at !== null,
    created_at: row.created_at.toISOString(),
  };
}

export function workspaceRowToWorkspace(row: store.WorkspaceRow): Workspace {
  return {
    id: row.id,
    organization_id: row.organization_id,
    name: row.name,
    home_country: row.home_country,
    timezone: row.timezone,
    sms_enabled: row.sms_enabled,
    created_at: row.created_at.toISOString(),
  };
}

export function apiKeyRowToApiKey(row: store.ApiKeyRow): ApiKey {
  return {
    id: row.id,
    prefix: row.prefix,
    name: row.name,
    scope: row.scope,
    organization_id: row.organization_id,
    workspace_id: row.workspace_id,
    created_at: row.created_at.toISOString(),
    revoked_at: row.revoked_at?.toISOString() ?? null,
  };
}

/** Resolve `Authorization: Bearer …` to a principal; any failure is the same 401. */
/**
 * Key rows by lookup prefix, kept for KEY_CACHE_MS so a busy client's
 * requests do not each cost a query. A key revoked through this process
 * stops working at once (the revocation empties the cache); one revoked
 * through another API process stops within KEY_CACHE_MS. Only keys that
 * were found are kept: a new key works on its first request.
 */
export const KEY_CACHE_MS = 2_000;
const keyCache = new Map<string, { at: number; row: store.ApiKeyRow }>();

async function findKeyCached(db: DbOrTx, prefix: string): Promise<store.ApiKeyRow | undefined> {
  const now = Date.now();
  const hit = keyCache.get(prefix);
  if (hit !== undefined && now - hit.at < KEY_CACHE_MS) return hit.row;
  const row = await store.findApiKeyByPrefix(db, prefix);
  if (keyCache.size >= 10_000) keyCache.clear();
  if (row === undefined) keyCache.delete(prefix);
  else keyCache.set(prefix, { at: now, row });
  return row;
}

export async function authenticate(db: DbOrTx, header: string | undefined): Promise<Principal> {
  const token = bearerToken(header);
  const parsed = token === undefined ? undefined : parseApiKey(token);
  if (token === undefined || parsed === undefined) {
    throw new DomainError(
      'unauthenticated',
      'Send a valid API key as "Authorization: Bearer <key>".',
    );
  }
  const row = await findKeyCached(db, parsed.prefix);
  if (row === undefined || !apiKeyMatches(token, row.key_hash)) {
    throw new DomainError('unauthenticated', 'The API key is not valid.');
  }
  if (row.revoked_at !== null) throw new DomainError('unauthenticated', 'The API key was revoked.');
  switch (row.scope) {
    case 'operator':
      return { scope: 'operator', keyId: row.id };
    case 'organization':
      return { scope: 'organization', keyId: row.id, organizationId: row.organization_id! };
    case 'workspace':
      return {
        scope: 'workspace',
        keyId: row.id,
        organizationId: row.organization_id!,
        workspaceId: row.workspace_id!,
      };
    default: {
      const never: never = row.scope;
      throw new Error(`unknown key scope ${String(never)}`);
    }
  }
}

export interface CreatedKey {
  key: string;
  api_key: ApiKey;
}

async function issueKey(
  db: DbOrTx,
  input: {
    scope: ApiKeyScope;
    organizationId: string | null;
    workspaceId: string | null;
    name: string;
    createdBy: string | null;
  },
): Promise<CreatedKey> {
  const generated = generateApiKey(input.scope);
  const row = await store.insertApiKey(db, {
    ...input,
    prefix: generated.prefix,
    hash: generated.hash,
  });
  return { key: generated.plaintext, api_key: apiKeyRowToApiKey(row) };
}

/**
 * On first start only: if the platform has no operator key at all, make one.
 * An advisory lock keeps two processes starting together from both making one.
 */
export async function bootstrapOperatorKey(db: Db): Promise<CreatedKey | undefined> {
  return db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(7231044914)`.execute(trx);
    if ((await store.countOperatorKeys(trx)) > 0) return undefined;
    return issueKey(trx, {
      scope: 'operator',
      organizationId: null,
      workspaceId: null,
      name: 'bootstrap operator key',
      createdBy: null,
    });
  });
}

/** CLI: a fresh operator key, for an operator who lost the bootstrap one. */
export async function createOperatorKeyFromCli(db: Db, name: string): Promise<CreatedKey> {
  return db.transaction().execute(async (trx) => {
    const created = await issueKey(trx, {
      scope: 'operator',
      organizationId: null,
      workspaceId: null,
      name,
      createdBy: null,
    });
    await store.insertAudit(trx, {
      actorKeyId: null,
      actorScope: 'cli',
      action: 'api_key.create',
      organizationId: null,
      targetType: 'api_key',
      targetId: created.api_key.id,
    });
    return created;
  });
}

function checkZone(field: string, zone: string): void {
  if (!IANAZone.isValidZone(zone))
    throw validationError(field, `"${zone}" is not an IANA time zone`);
}

export async function createOrganization(
  db: Db,
  actor: Actor,
  input: { name: string; admin_key_name?: string },
): Promise<{ organization: Organization; admin_key: CreatedKey }> {
  requireOperator(actor.principal);
  return db.transaction().execute(async (trx) => {
    const org = await store.insertOrganization(trx, { name: input.name });
    const adminKey = await issueKey(trx, {
      scope: 'organization',
      organizationId: org.id,
      workspaceId: null,
      name: input.admin_key_name ?? 'organization admin',
      createdBy: actor.principal.keyId,
    });
    await store.insertAudit(trx, {
      actorKeyId: actor.principal.keyId,
      actorScope: actor.principal.scope,
      action: 'organization.create',
      organizationId: org.id,
      targetType: 'organization',
      targetId: org.id,
      details: { name: input.name, admin_key_id: adminKey.api_key.id },
      requestId: actor.requestId ?? null,
    });
    return { organization: organizationRowToOrganization(org), admin_key: adminKey };
  });
}

export async function getOrganization(db: DbOrTx, actor: Actor, id: string): Promise<Organization> {
  const p = actor.principal;
  if (p.scope !== 'operator' && p.organizationId !== id) throw notFound('Organization');
  const row = await store.findOrganization(db, id);
  if (row === undefined) throw notFound('Organization');
  return organizationRowToOrganization(row);
}

/** The organization an org-admin request acts on: its own, or the one an operator names. */
function targetOrganization(p: Principal, organizationId: string | undefined): string {
  requireOrgAdmin(p, organizationId);
  if (p.scope === 'organization') return p.organizationId;
  if (organizationId === undefined)
    throw validationError('organization_id', 'is required with an operator key');
  return organizationId;
}

export async function createWorkspace(
  db: Db,
  actor: Actor,
  input: { name: string; home_country?: string; timezone?: string; organization_id?: string },
): Promise<Workspace> {
  const orgId = targetOrganization(actor.principal, input.organization_id);
  const timezone = input.timezone ?? 'UTC';
  checkZone('timezone', timezone);
  if (input.home_country !== undefined && !isCountryCode(input.home_country)) {
    throw validationError('home_country', 'must be an ISO 3166-1 alpha-2 code of a country with a numbering plan, such as US');
  }
  return db.transaction().execute(async (trx) => {
    if ((await store.findOrganization(trx, orgId)) === undefined) throw notFound('Organization');
    const row = await store.insertWorkspace(trx, orgId, {
      name: input.name,
      homeCountry: input.home_country ?? 'US',
      timezone,
    });
    await store.insertAudit(trx, {
      actorKeyId: actor.principal.keyId,
      actorScope: actor.principal.scope,
      action: 'workspace.create',
      organizationId: orgId,
      targetType: 'workspace',
      targetId: row.id,
      details: { name: input.name },
      requestId: actor.requestId ?? null,
    });
    return workspaceRowToWorkspace(row);
  });
}

export async function listWorkspaces(
  db: DbOrTx,
  actor: Actor,
  page: PageRequest,
  organizationId?: string,
): Promise<Page<Workspace>> {
  const orgId = targetOrganization(actor.principal, organizationId);
  const rows = await store.listWorkspaces(db, orgId, page);
  return toPage(rows, page, (r) => r.id, workspaceRowToWorkspace);
}

export async function getWorkspace(db: DbOrTx, actor: Actor, id: string): Promise<Workspace> {
  const row = await store.findWorkspace(db, undefined, id);
  if (row === undefined || !canSeeWorkspace(actor.principal, row.organization_id, row.id)) {
    throw notFound('Workspace');
  }
  return workspaceRowToWorkspace(row);
}

/**
 * Turn a workspace's SMS on or off (organization admin or operator;
 * audited), in the caller's transaction. Off: no claim of the workspace's
 * messages that starts after the commit succeeds (the claim's UPDATE reads
 * the switch; as with a freeze, a claim already running may still commit),
 * dispatch blocks them with `workspace_disabled`, and their campaigns pause
 * with that reason. `changed` is false when the switch already was so.
 */
export async function setWorkspaceSms(
  trx: DbOrTx,
  actor: Actor,
  id: string,
  input: { enabled: boolean; reason: string | null },
): Promise<{ workspace: Workspace; changed: boolean }> {
  const found = await store.findWorkspace(trx, undefined, id);
  if (found === undefined || !canSeeWorkspace(actor.principal, found.organization_id, found.id)) throw notFound('Workspace');
  requireOrgAdmin(actor.principal, found.organization_id);
  const updated = await store.setWorkspaceSmsEnabled(trx, id, input.enabled);
  if (updated !== undefined) {
    await recordAudit(trx, actor, {
      action: input.enabled ? 'workspace.sms_enable' : 'workspace.sms_disable',
      organizationId: found.organization_id,
      targetType: 'workspace',
      targetId: id,
      reason: input.reason,
    });
  }
  return { workspace: workspaceRowToWorkspace(updated ?? found), changed: updated !== undefined };
}

export async function createApiKey(
  db: Db,
  actor: Actor,
  input: { name: string; scope: ApiKeyScope; organization_id?: string; workspace_id?: string },
): Promise<CreatedKey> {
  const p = actor.principal;
  if (p.scope === 'workspace')
    throw new DomainError('forbidden', 'Workspace keys cannot create keys.');
  return db.transaction().execute(async (trx) => {
    let organizationId: string | null = null;
    let workspaceId: string | null = null;
    switch (input.scope) {
      case 'operator':
        requireOperator(p);
        if (input.organization_id !== undefined) throw validationError('organization_id', 'an operator key belongs to no organization');
        break;
      case 'organization': {
        organizationId = targetOrganization(p, input.organization_id);
        if ((await store.findOrganization(trx, organizationId)) === undefined)
          throw notFound('Organization');
        break;
      }
      case 'workspace': {
        if (input.workspace_id === undefined)
          throw validationError('workspace_id', 'is required for a workspace key');
        const ws = await store.findWorkspace(
          trx,
          p.scope === 'operator' ? undefined : p.organizationId,
          input.workspace_id,
        );
        if (ws === undefined) throw notFound('Workspace');
        if (input.organization_id !== undefined && input.organization_id !== ws.organization_id) {
          throw validationError('organization_id', 'is not the organization of workspace_id (it may be left out)');
        }
        organizationId = ws.organization_id;
        workspaceId = ws.id;
        break;
      }
      default: {
        const never: never = input.scope;
        throw validationError('scope', `unknown scope ${String(never)}`);
      }
    }
    const created = await issueKey(trx, {
      scope: input.scope,
      organizationId,
      workspaceId,
      name: input.name,
      createdBy: p.keyId,
    });
    await store.insertAudit(trx, {
      actorKeyId: p.keyId,
      actorScope: p.scope,
      action: 'api_key.create',
      organizationId,
      targetType: 'api_key',
      targetId: created.api_key.id,
      details: { scope: input.scope, workspace_id: workspaceId, name: input.name },
      requestId: actor.requestId ?? null,
    });
    return created;
  });
}

export async function listApiKeys(
  db: DbOrTx,
  actor: Actor,
  page: PageRequest,
  filter: { organization_id?: string; workspace_id?: string },
): Promise<Page<ApiKey>> {
  const p = actor.principal;
  if (p.scope === 'workspace')
    throw new DomainError('forbidden', 'Workspace keys cannot list keys.');
  // An operator without an organization filter sees the operator keys.
  const orgId =
    p.scope === 'operator'
      ? (filter.organization_id ?? null)
      : targetOrganization(p, filter.organization_id);
  // a workspace filter names a workspace this key may see, or is a 404 (not an empty page)
  if (filter.workspace_id !== undefined && (await store.findWorkspace(db, orgId ?? undefined, filter.workspace_id)) === undefined) {
    throw notFound('Workspace');
  }
  const rows = await store.listApiKeys(
    db,
    {
      organizationId: orgId,
      ...(filter.workspace_id !== undefined && { workspaceId: filter.workspace_id }),
    },
    page,
  );
  return toPage(rows, page, (r) => r.id, apiKeyRowToApiKey);
}

export async function revokeApiKey(db: Db, actor: Actor, id: string): Promise<ApiKey> {
  const p = actor.principal;
  if (p.scope === 'workspace')
    throw new DomainError('forbidden', 'Workspace keys cannot revoke keys.');
  const revoked = await db.transaction().execute(async (trx) => {
    const row = await store.findApiKey(
      trx,
      p.scope === 'operator' ? undefined : p.organizationId,
      id,
    );
    if (row === undefined) throw notFound('API key');
    if (row.scope === 'operator') requireOperator(p);
    const revoked = (await store.markApiKeyRevoked(trx, id)) ?? row;
    await store.insertAudit(trx, {
      actorKeyId: p.keyId,
      actorScope: p.scope,
      action: 'api_key.revoke',
      organizationId: row.organization_id,
      targetType: 'api_key',
      targetId: id,
      requestId: actor.requestId ?? null,
    });
    return apiKeyRowToApiKey(revoked);
  });
  // after the commit: no request of this process is let in by a cached copy
  keyCache.clear();
  return revoked;
}

export interface Me {
  key_id: string;
  scope: ApiKeyScope;
  organization: Organization | null;
  workspace: Workspace | null;
}

export async function me(db: DbOrTx, actor: Actor): Promise<Me> {
  const p = actor.principal;
  const org =
    p.scope === 'operator' ? undefined : await store.findOrganization(db, p.organizationId);
  const ws =
    p.scope === 'workspace'
      ? await store.findWorkspace(db, p.organizationId, p.workspaceId)
      : undefined;
  return {
    key_id: p.keyId,
    scope: p.scope,
    organization: org ? organizationRowToOrganization(org) : null,
    workspace: ws ? workspaceRowToWorkspace(ws) : null,
  };
}

/** Record an admin action in the audit log (call inside the action's transaction). */
export async function recordAudit(
  db: DbOrTx,
  actor: Actor,
  entry: {
    action: string;
    organizationId: string | null;
    targetType: string;
    targetId: string;
    reason?: string | null;
    details?: Record<string, unknown>;
  },
): Promise<void> {
  await store.insertAudit(db, {
    ...entry,
    actorKeyId: actor.principal.keyId,
    actorScope: actor.principal.scope,
    requestId: actor.requestId ?? null,
  });
}

/** The organization a read acts on: a tenant key's own, or the one an operator names (404 if none). */
export async function readableOrganization(db: DbOrTx, actor: Actor, organizationId: string | undefined): Promise<string> {
  const p = actor.principal;
  if (p.scope !== 'operator') {
    if (organizationId !== undefined && organizationId !== p.organizationId) throw notFound('Organization');
    return p.organizationId;
  }
  if (organizationId === undefined) throw validationError('organization_id', 'is required with an operator key');
  if ((await store.findOrganization(db, organizationId)) === undefined) throw notFound('Organization');
  return organizationId;
}
