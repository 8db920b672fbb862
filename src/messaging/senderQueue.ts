import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';

/**
 * A sender's queue: the messages a claim could not fit in their sender's
 * rate slots (`queued`, `status_reason = 'sender_rate'`) go out in id
 * order, a few at a time, as the sender's slots free up. One job per sender
 * (`sender_queue`, keyed by workspace and number) takes the next ones its
 * slots within the horizon can carry and sends them through the ordinary
 * claim; as soon as that claim has committed it asks for the next turn at
 * the sender's next free slot, while any wait.
 *
 * Before, each message that found no slot got a send job of its own at the
 * sender's next free slot: a backlog of N messages behind a one-a-second
 * long code was locked, decided and rewritten N times every two seconds
 * (a 2,000-recipient campaign: 640 message updates a second while one
 * message a second went out).
 */
export interface SenderKey {
  workspaceId: string;
  fromNumber: string;
}

/** Wake the sender's queue at `at` (an earlier pending wake-up keeps its time). */
export async function scheduleSenderQueue(db: DbOrTx, s: SenderKey, at: Date): Promise<void> {
  await addJob(db, 'sender_queue', { workspaceId: s.workspaceId, fromNumber: s.fromNumber }, {
    jobKey: `sender_queue:${s.workspaceId}:${s.fromNumber}`,
    jobKeyMode: 'preserve_run_at',
    runAt: at,
    maxAttempts: 25,
  });
}

/**
 * The sender's next waiting messages: due, in id order, as many as its rate
 * gives slots within `horizonMs` (at most `max`; `max` if the sender row is
 * gone, as a claim then grants every slot). Rows another transaction holds
 * are passed over (a claim deciding them now). The limit is a plain number,
 * so the planner reads `messages_sender_queue` in order and stops there,
 * whatever the backlog (with the limit computed in the statement it read
 * every due message of every sender through `messages_due` and sorted them).
 */
export async function nextInSenderQueue(db: DbOrTx, s: SenderKey, horizonMs: number, max: number): Promise<string[]> {
  const { rows: sender } = await sql<{ mps: string }>`select mps from sender_numbers
    where workspace_id = ${s.workspaceId} and phone_number = ${s.fromNumber}`.execute(db);
  const mps = sender[0] === undefined ? undefined : Number(sender[0].mps);
  const limit = mps === undefined ? max : Math.max(1, Math.min(max, Math.floor((mps * horizonMs) / 1000) + 1));
  const { rows } = await sql<{ id: string }>`
    select id from messages
    where workspace_id = ${s.workspaceId} and from_number = ${s.fromNumber} and status = 'queued'
      and coalesce(next_attempt_at, send_at) <= now()
    order by id
    limit ${limit}
    for update skip locked`.execute(db);
  return rows.map((r) => r.id);
}

/**
 * The next turn, if messages are still waiting (due by the sender's next
 * free slot and the horizon after it): at that slot, and not before
 * `notBefore` (a turn that found every waiting message held by another
 * transaction does not spin).
 */
export async function rescheduleSenderQueue(db: DbOrTx, s: SenderKey, horizonMs: number, notBefore: Date): Promise<boolean> {
  const { rows } = await sql<{ at: Date; waiting: boolean }>`
    with s as (
      select greatest(${notBefore}::timestamptz, now(), (select next_slot_at from sender_numbers
        where workspace_id = ${s.workspaceId} and phone_number = ${s.fromNumber})) as at
    )
    select s.at, exists (select 1 from messages
      where workspace_id = ${s.workspaceId} and from_number = ${s.fromNumber} and status = 'queued'
        and coalesce(next_attempt_at, send_at) <= s.at + ${horizonMs}::int * interval '1 millisecond') as waiting
    from s`.execute(db);
  const row = rows[0];
  if (row === undefined || !row.waiting) return false;
  await scheduleSenderQueue(db, s, row.at);
  return true;
}
