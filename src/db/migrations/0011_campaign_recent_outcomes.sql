-- A campaign's messages by status, then by claim time: the error-threshold
-- check reads the last 500 claimed messages of each final status from the
-- end of its range, instead of every finished message of the campaign
-- (which grew with the campaign, at each check, about once a second).
-- Replaces messages_campaign (campaign_id, status), which it also serves.
create index messages_campaign_claimed on messages (campaign_id, status, claimed_at) where campaign_id is not null;
drop index messages_campaign;
