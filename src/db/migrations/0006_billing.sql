-- Payments and subscriptions through Stripe (ARCHITECTURE §4, §8; G1, G4, G6).

-- Why an organization is frozen: an operator, or an open payment dispute.
alter table organizations add column frozen_by text check (frozen_by is null or frozen_by in ('operator', 'dispute'));

create table billing_customers (
  organization_id text primary key references organizations (id),
  stripe_customer_id text not null unique,
  created_at timestamptz not null default now()
);

-- One Checkout Session per purchase attempt; fulfilled at most once (by the
-- webhook or the return URL, whichever comes first).
create table checkout_sessions (
  id text primary key,
  organization_id text not null references organizations (id),
  kind text not null check (kind in ('pack', 'plan')),
  item text not null,
  credits integer not null check (credits >= 0),
  amount integer not null check (amount >= 0),
  currency text not null,
  status text not null check (status in ('open', 'fulfilled', 'expired')),
  payment_intent text,
  stripe_subscription_id text,
  created_at timestamptz not null default now(),
  fulfilled_at timestamptz
);
create index checkout_sessions_org on checkout_sessions (organization_id, created_at);
create unique index checkout_sessions_payment_intent on checkout_sessions (payment_intent) where payment_intent is not null;

-- What a paid charge bought, and how much of it refunds took back.
create table payments (
  payment_intent text primary key,
  organization_id text not null references organizations (id),
  session_id text not null references checkout_sessions (id),
  amount integer not null check (amount > 0),
  currency text not null,
  credits integer not null check (credits >= 0),
  -- the highest cumulative refunded amount seen (refund events may repeat or arrive out of order)
  refunded_amount integer not null default 0 check (refunded_amount >= 0 and refunded_amount <= amount),
  credits_clawed_back integer not null default 0 check (credits_clawed_back >= 0 and credits_clawed_back <= credits),
  created_at timestamptz not null default now()
);

create table subscriptions (
  organization_id text primary key references organizations (id),
  stripe_subscription_id text not null unique,
  plan text not null,
  status text not null,
  current_period_start timestamptz,
  current_period_end timestamptz,
  -- a past_due subscription may still send until then
  grace_until timestamptz,
  -- the Stripe `created` time of the newest state applied (older events change nothing)
  state_at bigint not null default 0,
  updated_at timestamptz not null default now()
);

create table disputes (
  id text primary key,
  organization_id text not null references organizations (id),
  payment_intent text,
  status text not null check (status in ('open', 'won', 'lost')),
  created_at timestamptz not null default now(),
  closed_at timestamptz
);
create index disputes_open on disputes (organization_id) where status = 'open';

-- The webhook inbox: each Stripe event id once.
create table stripe_events (
  id text primary key,
  type text not null,
  created bigint not null,
  payload jsonb not null,
  received_at timestamptz not null default now(),
  processed_at timestamptz
);

-- May this organization send, as far as its subscription is concerned? No
-- subscription (free plan, prepaid packs) may; an active or trialing one may;
-- past_due may during its grace period; anything else may not.
create function credence_subscription_ok(p_org text) returns boolean
language sql stable as $$
  select coalesce((
    select s.status in ('active', 'trialing') or (s.status = 'past_due' and s.grace_until > now())
    from subscriptions s where s.organization_id = p_org
  ), true)
$$;
