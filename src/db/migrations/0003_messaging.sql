-- Messages and the send pipeline (ARCHITECTURE §5; G1, G2, G3, G6, G7).

alter table organizations
  -- per-organization price list: {"multipliers": {"US": 1, ...}, "fallback": 3}
  add column price_list jsonb,
  -- refund the credits of a message the carrier reports undelivered
  add column refund_undelivered boolean not null default true;

-- Sender numbers of a workspace, with their send rate held across all workers.
create table sender_numbers (
  id text primary key,
  organization_id text not null,
  workspace_id text not null,
  phone_number text not null,
  kind text not null default 'long_code' check (kind in ('long_code', 'toll_free', 'short_code', 'alphanumeric')),
  -- messages per second this sender may send, across every worker process
  mps numeric not null default 1 check (mps > 0 and mps <= 10000),
  is_default boolean not null default false,
  -- the next free send slot: each send takes 1/mps seconds of it
  next_slot_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id),
  unique (workspace_id, phone_number)
);
create unique index sender_numbers_one_default on sender_numbers (workspace_id) where is_default;

create table messages (
  id text primary key,
  organization_id text not null,
  workspace_id text not null,
  -- the message's natural identity: api:<idempotency key>, campaign:<id>:<seq>, ...
  dedupe_key text not null,
  -- hash of the API request, so a reused idempotency key with another body is refused
  request_hash text,
  producer text not null check (producer in ('api', 'campaign', 'appointment', 'cart')),
  campaign_id text,
  purpose text not null check (purpose in ('transactional', 'marketing', 'appointment', 'cart_recovery')),
  to_number text not null,
  country text not null,
  from_number text not null,
  body text not null check (length(body) between 1 and 1600),
  encoding text not null check (encoding in ('GSM-7', 'UCS-2')),
  segments integer not null check (segments >= 1),
  cost integer not null check (cost >= 1),
  status text not null check (status in ('planned', 'queued', 'sending', 'sent', 'delivered', 'undelivered',
    'deferred', 'blocked', 'skipped', 'failed', 'unknown')),
  status_reason text,
  send_at timestamptz not null default now(),
  next_attempt_at timestamptz,
  attempts integer not null default 0,
  claimed_at timestamptz,
  lease_until timestamptz,
  reservation_id text,
  provider_sid text,
  provider_status text,
  error_code integer,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  sent_at timestamptz,
  terminal_at timestamptz,
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id),
  unique (workspace_id, dedupe_key)
);
-- dispatch: planned and due deferred messages of an organization
create index messages_dispatchable on messages (organization_id, id) where status in ('planned', 'deferred');
create index messages_blocked on messages (organization_id, id) where status = 'blocked';
-- sweeps: due work and expired leases
create index messages_due on messages ((coalesce(next_attempt_at, send_at))) where status in ('planned', 'deferred', 'queued');
create index messages_in_flight on messages (lease_until) where status in ('sending', 'unknown');
create unique index messages_provider_sid on messages (provider_sid) where provider_sid is not null;
create index messages_workspace on messages (workspace_id, id);
create index messages_to on messages (workspace_id, to_number, id);
create index messages_campaign on messages (campaign_id, status) where campaign_id is not null;

-- Every state change of a message: the audit trail of its whole life.
create table message_events (
  seq bigint generated always as identity primary key,
  message_id text not null,
  organization_id text not null,
  event text not null,
  from_status text,
  to_status text not null,
  reason text,
  details jsonb,
  at timestamptz not null default now()
);
create index message_events_message on message_events (message_id, seq);
create trigger message_events_append_only
  before update or delete on message_events
  for each row execute function credence_forbid_mutation();

-- Inbound SMS (replies, keywords), stored as received.
create table inbound_messages (
  id text primary key,
  provider_sid text not null unique,
  organization_id text,
  workspace_id text,
  from_number text not null,
  to_number text not null,
  body text not null,
  payload jsonb not null,
  received_at timestamptz not null default now()
);
create index inbound_messages_workspace on inbound_messages (workspace_id, id);
