-- The send-time checks that run for every message (consent at dispatch and
-- at claim, the subscription gate) as set-returning SQL functions, which the
-- planner inlines into the statement that uses them from a FROM clause. As
-- scalar functions with sub-queries they could not be inlined: each call was
-- a statement of its own, executed (and partly planned) once per message,
-- three levels deep for consent. The scalar functions stay, now defined
-- through these, for the callers that look at one value.

-- The pseudonym of a number under a given secret: one expression, inlined.
create function credence_phone_hash_with(p_secret text, p_phone text) returns text
language sql stable parallel safe as $$
  select 'ph_' || encode(sha256(convert_to(p_secret || ':' || p_phone, 'UTF8')), 'hex')
$$;

create or replace function credence_phone_hash(p_phone text) returns text
language sql stable parallel safe as $$
  select credence_phone_hash_with((select s.secret from instance_secrets s where s.name = 'phone_pseudonym'), p_phone)
$$;

-- Current consent for one purpose, one row: the same closed form as before
-- (the latest granted/revoked event decides, except that a double opt-in
-- request after a revocation, or with no decision yet, makes it pending).
create function credence_consent(p_workspace text, p_phone text, p_purpose text) returns table (state text)
language sql stable as $$
  select case
    when l.action = 'granted' then 'granted'
    when exists (
      select 1 from consent_events r
      where r.workspace_id = p_workspace and r.phone_hash = h.ph and r.purpose = p_purpose and r.action = 'requested'
        and (l.seq is null or (r.occurred_at, r.seq) > (l.occurred_at, l.seq))
    ) then 'pending'
    when l.action = 'revoked' then 'revoked'
    else 'none'
  end
  from (select credence_phone_hash_with((select s.secret from instance_secrets s where s.name = 'phone_pseudonym'), p_phone) as ph) h
  left join lateral (
    select e.action, e.occurred_at, e.seq from consent_events e
    where e.workspace_id = p_workspace and e.phone_hash = h.ph and e.purpose = p_purpose and e.action in ('granted', 'revoked')
    order by e.occurred_at desc, e.seq desc limit 1
  ) l on true
$$;

-- May this message go, as far as consent is concerned? One row (see
-- credence_consent_allows, 0004, for the rule).
create function credence_consent_check(p_workspace text, p_phone text, p_purpose text, p_producer text) returns table (allowed boolean)
language sql stable as $$
  select case
    when p_producer = 'system' then true
    when p_purpose in ('marketing', 'cart_recovery') then c.state = 'granted'
    else c.state <> 'revoked'
  end
  from credence_consent(p_workspace, p_phone, p_purpose) c
$$;

-- May this organization send, as far as its subscription is concerned? One
-- row (see credence_subscription_ok, 0006, for the rule).
create function credence_subscription_check(p_org text) returns table (ok boolean)
language sql stable as $$
  select coalesce((
    select s.status in ('active', 'trialing') or (s.status = 'past_due' and s.grace_until > now())
    from subscriptions s where s.organization_id = p_org
  ), true)
$$;

create or replace function credence_consent_state(p_workspace text, p_phone text, p_purpose text) returns text
language sql stable as $$
  select state from credence_consent(p_workspace, p_phone, p_purpose)
$$;

create or replace function credence_consent_allows(p_workspace text, p_phone text, p_purpose text, p_producer text) returns boolean
language sql stable as $$
  select allowed from credence_consent_check(p_workspace, p_phone, p_purpose, p_producer)
$$;

create or replace function credence_subscription_ok(p_org text) returns boolean
language sql stable as $$
  select ok from credence_subscription_check(p_org)
$$;
