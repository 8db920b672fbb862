-- Credit ledger (ARCHITECTURE §4; G1, G3, G4).
-- One account row per organization holds the balances; every change to it is
-- explained by ledger entries written in the same transaction, and the sum of
-- an organization's entries always equals its stored balances.

create table credit_accounts (
  organization_id text primary key references organizations (id),
  allowance_available bigint not null default 0 check (allowance_available >= 0),
  purchased_available bigint not null default 0 check (purchased_available >= 0),
  reserved_allowance bigint not null default 0 check (reserved_allowance >= 0),
  reserved_purchased bigint not null default 0 check (reserved_purchased >= 0),
  spent bigint not null default 0 check (spent >= 0),
  debt bigint not null default 0 check (debt >= 0),
  -- the allowance period the allowance bucket belongs to (e.g. an invoice id)
  allowance_period text,
  allowance_period_start timestamptz,
  low_balance_threshold bigint check (low_balance_threshold >= 0),
  low_balance_alerted boolean not null default false,
  updated_at timestamptz not null default now()
);

-- One row per idempotent operation: replays return `result`; the same key
-- with a different request is refused.
create table ledger_operations (
  organization_id text not null references organizations (id),
  idempotency_key text not null check (length(idempotency_key) between 1 and 300),
  kind text not null,
  request_hash text not null,
  -- json, not jsonb: stored as written and only read back on a replay
  result json not null,
  created_at timestamptz not null default now(),
  primary key (organization_id, idempotency_key)
);

-- The hot tables below carry no per-row foreign key to organizations: every
-- write happens under the lock of the account row, which has that key, and
-- per-row RI checks would halve batch throughput. `ledger verify` covers them.
create table credit_reservations (
  id text primary key,
  organization_id text not null,
  message_id text not null,
  from_allowance bigint not null check (from_allowance >= 0),
  from_purchased bigint not null check (from_purchased >= 0),
  -- the allowance period the allowance part came from: a release after a
  -- renewal must not bring expired allowance back
  allowance_period text,
  state text not null check (state in ('open', 'captured', 'released', 'refunded')),
  created_at timestamptz not null default now(),
  settled_at timestamptz,
  check (from_allowance + from_purchased > 0)
);
-- At most one open reservation per message (G1/G2 backstop; the service checks first).
create unique index credit_reservations_open_message
  on credit_reservations (organization_id, message_id) where state = 'open';

create table ledger_entries (
  -- the entry's identity and global order; shown as le_<seq>
  seq bigint generated always as identity,
  organization_id text not null,
  kind text not null check (kind in (
    'purchase', 'grant', 'allowance_renewal', 'allowance_expiry', 'reserve', 'capture',
    'release', 'refund', 'adjust', 'clawback', 'debt_repayment')),
  allowance_delta bigint not null default 0,
  purchased_delta bigint not null default 0,
  reserved_allowance_delta bigint not null default 0,
  reserved_purchased_delta bigint not null default 0,
  spent_delta bigint not null default 0,
  debt_delta bigint not null default 0,
  reservation_id text,
  message_id text,
  payment_ref text,
  actor_type text not null check (actor_type in ('api_key', 'operator', 'system')),
  actor_id text,
  reason text,
  idempotency_key text not null,
  created_at timestamptz not null default now(),
  -- (organization, seq) serves both identity and the per-organization listing
  primary key (organization_id, seq),
  unique (organization_id, idempotency_key)
);

create trigger ledger_entries_append_only
  before update or delete on ledger_entries
  for each row execute function credence_forbid_mutation();
create trigger ledger_operations_append_only
  before update or delete on ledger_operations
  for each row execute function credence_forbid_mutation();

create table credit_alerts (
  id text primary key,
  organization_id text not null references organizations (id),
  kind text not null check (kind in ('low_balance')),
  available bigint not null,
  threshold bigint not null,
  created_at timestamptz not null default now()
);
create index credit_alerts_org on credit_alerts (organization_id, id);

-- Results of `ledger verify` runs (CLI and the hourly job), read by /metrics.
create table ledger_verifications (
  id bigint generated always as identity primary key,
  accounts_checked integer not null,
  mismatches integer not null,
  details jsonb not null default '[]',
  created_at timestamptz not null default now()
);
