-- A throttled campaign's next advance step may not run before this time
-- (null: no throttle, or no step yet). Every path that schedules an advance
-- (start, resume, the sweep's restart of a stalled campaign) used to run it
-- at once, so a campaign throttled below one message every 30 s sent early
-- at every sweep, and each pause/resume pair added a step.
alter table campaigns add column next_advance_at timestamptz;
