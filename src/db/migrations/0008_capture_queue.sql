-- Captures owed. The carrier took these messages: the outcome step queues
-- each capture in its own transaction (the message is `sent` if and only if
-- its capture is owed), and a drain applies them in batches, one lock of
-- the organization's account row per batch. The account row is every
-- ledger operation's lock; taking it in every outcome step made the send
-- workers queue behind dispatch on it.
create table capture_queue (
  reservation_id text primary key,
  organization_id text not null,
  message_id text not null,
  queued_at timestamptz not null default now()
);
create index capture_queue_queued on capture_queue (queued_at);
