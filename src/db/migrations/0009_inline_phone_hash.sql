-- The same pseudonym as before, written as one expression so the planner
-- inlines it into the statements that call it (the consent look-ups run
-- for every message at dispatch and at claim); as a query with a FROM it
-- was planned and run as a statement of its own on every call.
create or replace function credence_phone_hash(p_phone text) returns text
language sql stable parallel safe as $$
  select 'ph_' || encode(sha256(convert_to((select s.secret from instance_secrets s where s.name = 'phone_pseudonym') || ':' || p_phone, 'UTF8')), 'hex')
$$;
