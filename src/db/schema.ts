import type { ColumnType, Generated } from 'kysely';

/**
 * Row types as PostgreSQL holds them. These are not domain types: each
 * capability converts rows in one named function.
 */
type CreatedAt = ColumnType<Date, Date | undefined, never>;

export interface OrganizationsTable {
  id: string;
  name: string;
  frozen_at: Date | null;
  created_at: CreatedAt;
}

export interface WorkspacesTable {
  id: string;
  organization_id: string;
  name: string;
  home_country: string;
  timezone: string;
  sms_enabled: Generated<boolean>;
  created_at: CreatedAt;
}

export type ApiKeyScope = 'operator' | 'organization' | 'workspace';

export interface ApiKeysTable {
  id: string;
  prefix: string;
  key_hash: Buffer;
  scope: ApiKeyScope;
  organization_id: string | null;
  workspace_id: string | null;
  name: string;
  created_by: string | null;
  created_at: CreatedAt;
  revoked_at: Date | null;
}

export interface AuditLogTable {
  id: string;
  actor_key_id: string | null;
  actor_scope: string;
  action: string;
  organization_id: string | null;
  target_type: string;
  target_id: string;
  reason: string | null;
  details: ColumnType<Record<string, unknown>, string, never>;
  request_id: string | null;
  created_at: CreatedAt;
}

export interface CredenceMigrationsTable {
  name: string;
  checksum: string;
  applied_at: CreatedAt;
}

export interface Database {
  organizations: OrganizationsTable;
  workspaces: WorkspacesTable;
  api_keys: ApiKeysTable;
  audit_log: AuditLogTable;
  credence_migrations: CredenceMigrationsTable;
}
