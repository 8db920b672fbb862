-- Contacts, lists, segments, CSV imports and campaigns (ARCHITECTURE §6; G1, G2, G6, G7).

create table contacts (
  id text primary key,
  organization_id text not null,
  workspace_id text not null,
  phone text not null,
  country text not null,
  first_name text,
  last_name text,
  -- IANA zone, when known (quiet hours use it before the number's)
  timezone text,
  locale text,
  attributes jsonb not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id),
  unique (workspace_id, phone)
);
create index contacts_workspace on contacts (workspace_id, id);
create index contacts_attributes on contacts using gin (attributes jsonb_path_ops);

-- Static lists.
create table contact_lists (
  id text primary key,
  organization_id text not null,
  workspace_id text not null,
  name text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default now(),
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id)
);
create table contact_list_members (
  list_id text not null references contact_lists (id) on delete cascade,
  contact_id text not null references contacts (id) on delete cascade,
  added_at timestamptz not null default now(),
  primary key (list_id, contact_id)
);
create index contact_list_members_contact on contact_list_members (contact_id);

-- Segments: a filter over contacts, evaluated when a campaign starts.
-- {"countries": ["US"], "timezones": ["America/New_York"], "attributes": {"tier": ["gold", "silver"]}}
create table segments (
  id text primary key,
  organization_id text not null,
  workspace_id text not null,
  name text not null check (length(name) between 1 and 200),
  filter jsonb not null,
  created_at timestamptz not null default now(),
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id)
);

-- CSV imports: the upload is kept in chunks (never whole in memory), parsed by a job.
create table contact_imports (
  id text primary key,
  organization_id text not null,
  workspace_id text not null,
  status text not null check (status in ('uploading', 'queued', 'running', 'completed', 'failed')),
  mapping jsonb not null default '{}',
  list_id text references contact_lists (id),
  rows_total integer not null default 0,
  rows_done integer not null default 0,
  rows_imported integer not null default 0,
  rows_merged integer not null default 0,
  rows_invalid integer not null default 0,
  consents_recorded integer not null default 0,
  error text,
  created_by text not null,
  created_at timestamptz not null default now(),
  finished_at timestamptz,
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id)
);
create table contact_import_chunks (
  import_id text not null references contact_imports (id) on delete cascade,
  seq integer not null,
  data bytea not null,
  primary key (import_id, seq)
);
create table contact_import_errors (
  import_id text not null references contact_imports (id) on delete cascade,
  row_number integer not null,
  field text,
  reason text not null,
  primary key (import_id, row_number)
);

create table campaigns (
  id text primary key,
  organization_id text not null,
  workspace_id text not null,
  name text not null check (length(name) between 1 and 200),
  body_template text not null check (length(body_template) between 1 and 1600),
  purpose text not null check (purpose in ('transactional', 'marketing', 'appointment', 'cart_recovery')),
  audience_type text not null check (audience_type in ('list', 'segment')),
  audience_id text not null,
  from_number text not null,
  scheduled_at timestamptz,
  -- messages per second this campaign may create; null = as fast as the senders allow
  throttle_mps numeric check (throttle_mps is null or throttle_mps > 0),
  auto_resume boolean not null default true,
  -- pause when the share of permanent failures in the last 500 sends passes this (0..1)
  error_threshold numeric check (error_threshold is null or (error_threshold > 0 and error_threshold <= 1)),
  status text not null check (status in ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')),
  pause_reason text,
  audience_size integer,
  -- recipients turned into messages so far (seq <= cursor)
  cursor integer not null default 0,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  updated_at timestamptz not null default now(),
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id)
);
create index campaigns_workspace on campaigns (workspace_id, id);
create index campaigns_paused_for_credits on campaigns (organization_id) where status = 'paused' and pause_reason = 'insufficient_credits';

-- The audience, snapshotted at start: numbered, so progress is deterministic.
create table campaign_recipients (
  campaign_id text not null references campaigns (id),
  seq integer not null,
  contact_id text not null,
  phone text not null,
  timezone text,
  -- the contact's fields at start, for rendering
  variables jsonb not null,
  primary key (campaign_id, seq)
);

-- Every lifecycle change of a campaign, with who and why.
create table campaign_events (
  seq bigint generated always as identity primary key,
  campaign_id text not null,
  event text not null,
  from_status text,
  to_status text not null,
  reason text,
  actor text not null,
  at timestamptz not null default now()
);
create index campaign_events_campaign on campaign_events (campaign_id, seq);
create trigger campaign_events_append_only
  before update or delete on campaign_events
  for each row execute function credence_forbid_mutation();
