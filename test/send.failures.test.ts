import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type Db } from '../src/db/db.ts';
import { dispatchOrganization, sendBatch } from '../src/messaging/index.ts';
import { failingPool } from './helpers/failingPool.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * The send step when the database fails it halfway: a pre-send check that
 * fails leaves its message not sent and back in the queue (not `sending`
 * until its lease), and an outcome step that PostgreSQL rolls back for a
 * deadlock is recorded again at once, without a second carrier call.
 */
let p: Pipeline;
let phone = 6000;

beforeAll(async () => {
  // one message a second from the sender: the second of a batch waits for its slot, then is checked again
  p = await startPipeline({ withWorker: false, senderMps: 1 });
  await grantCredits(p, 10_000);
});
afterAll(async () => {
  await p?.close();
});

/**
 * A Kysely over its own pool whose statements containing `marker` fail
 * (`times` of them, then they run), as a dying connection or a deadlock
 * would fail them. Statements may come as text or as a named prepared statement.
 */
function failing(marker: string, error: () => Error, times = Number.POSITIVE_INFINITY): { db: Db; failures: () => number } {
  let failures = 0;
  const pool = failingPool(p.tdb.url, (text) => {
    if (!text.includes(marker) || failures >= times) return undefined;
    failures++;
    return error();
  });
  return { db: createDb(pool), failures: () => failures };
}

async function newMessages(n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await sendViaApi(p, { to: `+1415555${String(phone++).padStart(4, '0')}`, body: `failure test ${phone}` });
    expect(r.statusCode).toBe(202);
    ids.push(r.json.id as string);
  }
  await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  return ids;
}

const copiesAtCarrier = (id: string) => p.simulator.log().filter((e) => e.statusCallback?.includes(id)).length;

describe('a pre-send check the database fails', () => {
  it('a message that waited for its slot is not sent and goes back to queued with a transient reason; nothing is left sending', async () => {
    const ids = await newMessages(3);
    const broken = failing('as consent,', () => new Error('Connection terminated unexpectedly'));
    try {
      await sendBatch({ ...p.sendDeps, db: broken.db }, ids);
    } finally {
      await broken.db.destroy();
    }
    expect(broken.failures()).toBeGreaterThanOrEqual(1);
    const rows = await Promise.all(ids.map((id) => message(p, id)));
    // those whose second look failed: back in the queue with the transient reason, not at the carrier
    expect(rows.filter((m) => m.status === 'queued' && m.status_reason === 'transient_error')).toHaveLength(broken.failures());
    for (const m of rows) {
      // nothing is left sending: each is either at the carrier and recorded, or back in the queue
      // (the simulator's own callbacks may have moved a sent one on to delivered)
      expect(['sent', 'delivered', 'queued']).toContain(m.status);
      expect(copiesAtCarrier(m.id)).toBe(m.status === 'queued' ? 0 : 1);
    }
  });
});

describe('a message that waited for its slot past its claim', () => {
  it('is not sent if it is no longer this claim\'s (reconciliation put it back meanwhile), and stays queued for the next', async () => {
    const [first, second] = await newMessages(2);
    // one a second from the sender: the second waits about a second for its slot; meanwhile it is put back,
    // as reconciliation puts back a message whose lease ran out and that the carrier provably does not have
    const batch = sendBatch(p.sendDeps, [first!, second!]);
    await eventually(async () => ((await message(p, second!)).status === 'sending' ? true : undefined), 5_000, 'the claim');
    await sql`update messages set status = 'queued', lease_until = null, status_reason = 'lease_expired' where id = ${second!}`.execute(p.tdb.db);
    await batch;
    expect(copiesAtCarrier(first!)).toBe(1);
    expect(copiesAtCarrier(second!)).toBe(0);
    expect(await message(p, second!)).toMatchObject({ status: 'queued', status_reason: 'lease_expired' });
  });
});

describe('an outcome step rolled back for a deadlock', () => {
  it('is recorded again at once: sent once, captured, one copy at the carrier', async () => {
    const [id] = await newMessages(1);
    const deadlock = () => Object.assign(new Error('deadlock detected'), { code: '40P01' });
    // the outcome step's own look-up of what the carrier has, failed once
    const flaky = failing('select r.state from credit_reservations r where r.id = m.reservation_id', deadlock, 1);
    try {
      await sendBatch({ ...p.sendDeps, db: flaky.db }, [id!]);
    } finally {
      await flaky.db.destroy();
    }
    expect(flaky.failures()).toBe(1);
    expect(['sent', 'delivered']).toContain((await message(p, id!)).status);
    expect(copiesAtCarrier(id!)).toBe(1);
    // moved to sent once (by this step, or by the carrier's callback that came first)
    const { rows: events } = await sql<{ n: number }>`select count(*)::int as n from message_events where message_id = ${id!} and to_status = 'sent'`.execute(p.tdb.db);
    expect(events[0]!.n).toBe(1);
    await eventually(async () => {
      const { rows } = await sql<{ state: string }>`select r.state from credit_reservations r join messages m on m.reservation_id = r.id where m.id = ${id!}`.execute(p.tdb.db);
      return rows[0]?.state === 'captured' ? true : undefined;
    }, 10_000, 'the capture');
  });

  it('a failure that is not a deadlock is not retried: the batch stays sending for reconciliation', async () => {
    const [id] = await newMessages(1);
    const broken = failing('select r.state from credit_reservations r where r.id = m.reservation_id', () => new Error('disk full'), 1);
    try {
      await expect(sendBatch({ ...p.sendDeps, db: broken.db }, [id!])).rejects.toThrow('disk full');
    } finally {
      await broken.db.destroy();
    }
    // (unless the simulator's status callback already moved it on)
    expect(['sending', 'sent', 'delivered']).toContain((await message(p, id!)).status);
    expect(copiesAtCarrier(id!)).toBe(1);
    const { rows: events } = await sql<{ n: number }>`select count(*)::int as n from message_events where message_id = ${id!} and event = 'accepted'`.execute(p.tdb.db);
    expect(events[0]!.n).toBe(0);
  });
});
