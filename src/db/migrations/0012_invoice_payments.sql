-- What a paid subscription invoice bought (its period's allowance), and how
-- much of it refunds or a lost dispute took back: the subscription
-- counterpart of `payments` (a pack's charge). `allowance` is what the
-- invoice's renewal granted: 0 for an invoice that renewed nothing (a late
-- one for an older period).
create table invoice_payments (
  payment_intent text primary key,
  invoice_id text not null unique,
  organization_id text not null references organizations (id),
  amount integer not null check (amount > 0),
  currency text not null,
  allowance integer not null check (allowance >= 0),
  -- the credit account's allowance period this invoice opened (`{subscription}:{period start}`)
  allowance_period text not null,
  refunded_amount integer not null default 0 check (refunded_amount >= 0 and refunded_amount <= amount),
  credits_clawed_back integer not null default 0 check (credits_clawed_back >= 0 and credits_clawed_back <= allowance),
  created_at timestamptz not null default now()
);
