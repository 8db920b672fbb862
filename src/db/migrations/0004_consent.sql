-- Consent, quiet hours, number safety and sending limits (ARCHITECTURE §7; G5, G6).

-- A keyed hash of phone numbers: consent is looked up by it, so a number
-- erased for GDPR (plain number removed) is still matched by a later STOP.
-- The key is made once per installation and never leaves the database.
create table instance_secrets (
  name text primary key,
  secret text not null
);
insert into instance_secrets (name, secret)
  values ('phone_pseudonym', encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || clock_timestamp()::text, 'UTF8')), 'hex'));

create function credence_phone_hash(p_phone text) returns text
language sql stable parallel safe as $$
  select 'ph_' || encode(sha256(convert_to(s.secret || ':' || p_phone, 'UTF8')), 'hex')
  from instance_secrets s where s.name = 'phone_pseudonym'
$$;

-- Per-workspace sending rules; null or absent keys mean "the default".
alter table workspaces
  -- destination countries this workspace may text (null = its home country only)
  add column allowed_countries text[] check (allowed_countries is null or cardinality(allowed_countries) between 1 and 250),
  -- {"marketing": {"start": "10:00", "end": "19:00"}, ...}: local send windows per purpose
  add column send_windows jsonb not null default '{}',
  -- {"marketing": {"count": 1, "hours": 24}, ...}: at most count sends per phone and purpose per window
  add column frequency_caps jsonb not null default '{}',
  -- transactional + appointment messages per hour (a host-app bug cannot drain credits); null = no cap
  add column hourly_cap integer default 100 check (hourly_cap is null or hourly_cap >= 0),
  -- marketing consent stays pending until the person answers YES to a confirmation text
  add column double_opt_in boolean not null default false,
  add column help_text text check (help_text is null or length(help_text) between 1 and 1600),
  add column opt_in_prompt text check (opt_in_prompt is null or length(opt_in_prompt) between 1 and 1600);

-- The consent log: append-only, per workspace, phone and purpose. The current
-- state is derived from it (latest by occurred_at, then seq), never edited.
create table consent_events (
  seq bigint generated always as identity primary key,
  organization_id text not null,
  workspace_id text not null,
  phone_hash text not null,
  -- the plain E.164 number; null once the number was erased (GDPR)
  phone text,
  purpose text not null check (purpose in ('transactional', 'marketing', 'appointment', 'cart_recovery')),
  action text not null check (action in ('granted', 'revoked', 'requested')),
  source text not null check (source in ('api', 'checkout_form', 'inbound_sms', 'carrier_opt_out', 'operator', 'import')),
  evidence jsonb not null default '{}',
  actor text not null,
  -- when the person gave or withdrew consent (a form filled last week) …
  occurred_at timestamptz not null,
  -- … and when we recorded it
  recorded_at timestamptz not null default now(),
  foreign key (workspace_id, organization_id) references workspaces (id, organization_id)
);
create index consent_events_lookup on consent_events (workspace_id, phone_hash, purpose, occurred_at desc, seq desc);

-- Append-only, with one exception: erasure may blank the plain number and
-- the evidence, and nothing else.
create function consent_events_guard() returns trigger
language plpgsql as $$
begin
  if tg_op = 'UPDATE' and new.phone is null and new.evidence = '{"erased": true}'::jsonb
     and (new.seq, new.organization_id, new.workspace_id, new.phone_hash, new.purpose, new.action, new.source, new.actor, new.occurred_at, new.recorded_at)
       is not distinct from
         (old.seq, old.organization_id, old.workspace_id, old.phone_hash, old.purpose, old.action, old.source, old.actor, old.occurred_at, old.recorded_at)
  then
    return new;
  end if;
  raise exception 'consent_events is append-only: % is not allowed', tg_op using errcode = 'restrict_violation';
end;
$$;
create trigger consent_events_append_only
  before update or delete on consent_events
  for each row execute function consent_events_guard();

-- Current consent for one purpose, the closed form of the pure fold in
-- src/consent/consent.ts (tested to agree): the latest granted/revoked event
-- decides, except that a double opt-in request after a revocation (or with
-- no decision yet) makes it pending.
create function credence_consent_state(p_workspace text, p_phone text, p_purpose text) returns text
language sql stable as $$
  with h as (select credence_phone_hash(p_phone) as ph),
  l as (
    select e.action, e.occurred_at, e.seq from consent_events e, h
    where e.workspace_id = p_workspace and e.phone_hash = h.ph and e.purpose = p_purpose and e.action in ('granted', 'revoked')
    order by e.occurred_at desc, e.seq desc limit 1
  )
  select case
    when (select action from l) = 'granted' then 'granted'
    when exists (
      select 1 from consent_events r, h
      where r.workspace_id = p_workspace and r.phone_hash = h.ph and r.purpose = p_purpose and r.action = 'requested'
        and (not exists (select 1 from l) or (r.occurred_at, r.seq) > (select l.occurred_at, l.seq from l))
    ) then 'pending'
    when (select action from l) = 'revoked' then 'revoked'
    else 'none'
  end
$$;

-- May this message go, as far as consent is concerned? Marketing and cart
-- recovery need an express grant; transactional and appointment messages
-- follow from the person's own action and need only "not revoked"; system
-- replies (HELP, the double opt-in question) answer the person's own text.
create function credence_consent_allows(p_workspace text, p_phone text, p_purpose text, p_producer text) returns boolean
language sql stable as $$
  select case
    when p_producer = 'system' then true
    when p_purpose in ('marketing', 'cart_recovery') then credence_consent_state(p_workspace, p_phone, p_purpose) = 'granted'
    else credence_consent_state(p_workspace, p_phone, p_purpose) <> 'revoked'
  end
$$;

-- Messages: system replies (HELP answers, opt-in confirmations), and the
-- recipient's own time zone when the producer knows it (a contact's zone).
alter table messages drop constraint messages_producer_check;
alter table messages add constraint messages_producer_check
  check (producer in ('api', 'campaign', 'appointment', 'cart', 'system'));
alter table messages add column recipient_timezone text;
-- frequency caps: a phone's recent sends in a workspace
create index messages_recent_by_phone on messages (workspace_id, to_number, claimed_at) where claimed_at is not null;

-- Hourly send counters per workspace (the transactional/appointment cap),
-- one row per minute; the claim step sums the last hour under a lock.
create table send_counters (
  workspace_id text not null,
  minute timestamptz not null,
  sends integer not null check (sends >= 0),
  primary key (workspace_id, minute)
);

-- Inbound messages: what keyword, if any, they carried, and when handled.
alter table inbound_messages add column keyword text;
alter table inbound_messages add column erased boolean not null default false;
create index inbound_messages_from on inbound_messages (workspace_id, from_number);
