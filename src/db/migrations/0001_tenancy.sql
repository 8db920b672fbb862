-- Tenancy base: organizations (billing unit) own workspaces; API keys are
-- scoped to the platform operator, one organization, or one workspace.

create function credence_forbid_mutation() returns trigger
language plpgsql as $$
begin
  raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
    using errcode = 'restrict_violation';
end;
$$;

create table organizations (
  id text primary key,
  name text not null check (length(name) between 1 and 200),
  frozen_at timestamptz,
  created_at timestamptz not null default now()
);

create table workspaces (
  id text primary key,
  organization_id text not null references organizations (id),
  name text not null check (length(name) between 1 and 200),
  home_country text not null check (home_country ~ '^[A-Z]{2}$'),
  timezone text not null,
  sms_enabled boolean not null default true,
  created_at timestamptz not null default now(),
  unique (id, organization_id)
);
create index workspaces_org_idx on workspaces (organization_id, id);

create table api_keys (
  id text primary key,
  -- the first characters of the key, shown in lists and used to find the row
  prefix text not null unique,
  -- SHA-256 of the whole key; the key itself is never stored
  key_hash bytea not null check (length(key_hash) = 32),
  scope text not null check (scope in ('operator', 'organization', 'workspace')),
  organization_id text references organizations (id),
  workspace_id text,
  name text not null check (length(name) between 1 and 200),
  created_by text references api_keys (id),
  created_at timestamptz not null default now(),
  revoked_at timestamptz,
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id),
  check (
    (scope = 'operator' and organization_id is null and workspace_id is null)
    or (scope = 'organization' and organization_id is not null and workspace_id is null)
    or (scope = 'workspace' and organization_id is not null and workspace_id is not null)
  )
);
create index api_keys_org_idx on api_keys (organization_id, id);

-- Every admin action leaves a record: who, what, on what, why.
create table audit_log (
  id text primary key,
  actor_key_id text references api_keys (id),
  actor_scope text not null,
  action text not null,
  organization_id text references organizations (id),
  target_type text not null,
  target_id text not null,
  reason text,
  details jsonb not null default '{}',
  request_id text,
  created_at timestamptz not null default now()
);
create index audit_log_org_idx on audit_log (organization_id, id);

create trigger audit_log_append_only
  before update or delete on audit_log
  for each row execute function credence_forbid_mutation();
