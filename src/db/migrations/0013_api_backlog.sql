-- The API's backlog per organization: its messages due now and not yet at
-- the carrier. POST /v1/messages counts it (up to its limit) to hold new
-- requests while the pipeline is behind (messaging/admission.ts). Scheduled
-- messages (send_at ahead), retries waiting for their backoff and messages
-- waiting for a sender's rate slot have a due time ahead and are not
-- counted; deferred and blocked messages are not in it at all.
create index messages_api_backlog on messages (organization_id, (coalesce(next_attempt_at, send_at)))
  where producer = 'api' and status in ('planned', 'queued', 'sending');
