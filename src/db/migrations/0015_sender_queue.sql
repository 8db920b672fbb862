-- Messages waiting for their sender's rate slot, in the order they go: a
-- sender's queue (messaging/senderQueue.ts) takes the next few of them when
-- its slots free up. Before, every message a claim could not fit in its
-- sender's slots got a send job of its own a slot-horizon later, so a
-- backlog of N messages behind a one-a-second long code was locked and
-- rewritten N times every two seconds while one message a second went out.
create index messages_sender_queue on messages (workspace_id, from_number, id) where status = 'queued';
