import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, type Pipeline } from './helpers/pipeline.ts';
import { newSid, params, startStatusBatchPipeline, statusBatchHelpers, track } from './helpers/statusBatch.ts';

/**
 * The status-callback batcher when a message's row is held by another
 * transaction (a worker's outcome step, a refund): the rest of its batch is
 * written and answered without waiting, the held one applies once the holder
 * lets go (or is stale if the holder moved it), and held rows never stall
 * callbacks submitted later.
 *
 * Messages are made through the API and moved on by the real steps
 * (dispatch, claim). The simulator's own callbacks are held back (delays of
 * ten minutes) so that the callbacks each test submits are the only ones.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startStatusBatchPipeline();
});
afterAll(async () => {
  await p?.close();
});

const { batcherFor, create, toSending, statuses, eventsSince, lastEventSeq, lockWaiters } = statusBatchHelpers(() => p);

describe('a message held by another transaction', () => {
  /** Open transactions holding these messages' rows, as a worker's outcome step or a refund would. */
  async function hold(ids: readonly string[]): Promise<pg.PoolClient[]> {
    const clients: pg.PoolClient[] = [];
    for (const id of ids) {
      const c = await p.tdb.pool.connect();
      clients.push(c);
      await c.query('begin');
      await c.query('select id from messages where id = $1 for update', [id]);
    }
    return clients;
  }
  async function letGo(clients: readonly pg.PoolClient[]): Promise<void> {
    for (const c of clients) {
      await c.query('rollback').catch(() => undefined);
      c.release();
    }
  }

  it('the rest of its batch is written without waiting; the held one applies once the holder rolls back, and is stale if the holder moved it', async () => {
    const ids = await create(22, 'held');
    await toSending(ids);
    const sids = new Map(ids.map((id) => [id, newSid()]));
    const [held, heldMoved, ...others] = ids as [string, string, ...string[]];
    const since = await lastEventSeq();
    const lockers = await hold([held, heldMoved]);
    const batcher = batcherFor();
    try {
      const waiting = [track(batcher.submit(held, params(sids.get(held)!, 'sent'))), track(batcher.submit(heldMoved, params(sids.get(heldMoved)!, 'delivered')))];
      const rest = others.map((id) => track(batcher.submit(id, params(sids.get(id)!, 'delivered'))));
      // the held two wait on their row locks, in their own one-message transactions …
      await eventually(async () => ((await lockWaiters()) >= 2 ? true : undefined), 5_000, 'the held callbacks to wait for their rows');
      // … while the batch's own step for the others has committed
      const now = await statuses(ids);
      for (const id of others) expect(now.get(id)!.status, id).toBe('delivered');
      expect(now.get(held)!.status).toBe('sending');
      expect(waiting.map((w) => w.state.settled)).toEqual([false, false]);

      // one holder gives up; the other moves its message on itself and commits
      await lockers[0]!.query('rollback');
      await lockers[1]!.query(`update messages set status = 'delivered', provider_sid = $2, terminal_at = now() where id = $1`, [heldMoved, sids.get(heldMoved)]);
      await lockers[1]!.query('commit');
      await Promise.all([...waiting, ...rest].map((w) => w.done));
      expect(waiting.map((w) => w.state.value)).toEqual(['applied', 'duplicate_or_stale']);
      expect(rest.map((w) => w.state.value)).toEqual(others.map(() => 'applied'));
      expect((await statuses([held])).get(held)).toMatchObject({ status: 'sent', provider_sid: sids.get(held) });
      const events = await eventsSince(ids, since);
      expect(events.get(held)).toEqual({ carrier_sent: 1 });
      expect(events.get(heldMoved)).toEqual({});
      for (const id of others) expect(events.get(id), id).toEqual({ carrier_delivered: 1 });
    } finally {
      await letGo(lockers);
      await batcher.close();
    }
  });

  // A held message delays only its own callbacks: the batch's own steps are
  // answered right after their commit.
  it('the rest of its batch is answered while the holder is still open', async () => {
    const ids = await create(11, 'held answers');
    await toSending(ids);
    const sids = new Map(ids.map((id) => [id, newSid()]));
    const [held, ...others] = ids as [string, ...string[]];
    const lockers = await hold([held]);
    const batcher = batcherFor();
    try {
      const waiting = track(batcher.submit(held, params(sids.get(held)!, 'delivered')));
      const rest = others.map((id) => track(batcher.submit(id, params(sids.get(id)!, 'delivered'))));
      await eventually(async () => (rest.every((w) => w.state.settled) ? true : undefined), 5_000, 'the rest of the batch to be answered while the row is held');
      expect(rest.map((w) => w.state.value)).toEqual(others.map(() => 'applied'));
      expect(waiting.state.settled).toBe(false);
    } finally {
      await letGo(lockers);
      await batcher.close();
    }
  });

  // A batch's slot is free once its commit is done: held rows never stall
  // unrelated callbacks submitted later.
  it('callbacks submitted later are not held up behind two batches each waiting for a held row', async () => {
    const ids = await create(6, 'stall');
    await toSending(ids);
    const sids = new Map(ids.map((id) => [id, newSid()]));
    const [h1, h2, ...others] = ids as [string, string, ...string[]];
    const lockers = await hold([h1, h2]);
    const batcher = batcherFor({ maxInFlight: 2 });
    try {
      // two batches, each with one held message
      const w1 = track(batcher.submit(h1, params(sids.get(h1)!, 'sent')));
      await eventually(async () => ((await lockWaiters()) >= 1 ? true : undefined), 5_000, 'the first batch to wait');
      const w2 = track(batcher.submit(h2, params(sids.get(h2)!, 'sent')));
      await eventually(async () => ((await lockWaiters()) >= 2 ? true : undefined), 5_000, 'the second batch to wait');
      // a third batch of unrelated messages, nobody holding them
      const later = track(Promise.all(others.map((id) => batcher.submit(id, params(sids.get(id)!, 'delivered')))));
      await eventually(async () => (later.state.settled ? true : undefined), 3_000, 'unrelated callbacks to be answered while the rows are held');
      expect(later.state.value).toEqual(others.map(() => 'applied'));
      expect([w1.state.settled, w2.state.settled]).toEqual([false, false]);
    } finally {
      await letGo(lockers);
      await batcher.close();
    }
  });
});
