import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { dispatchOrganization, reconcile, sendBatch } from '../src/messaging/index.ts';
import { forEachLimited } from '../src/shared/concurrency.ts';
import { eventually, grantCredits, message, sendViaApi, startPipeline } from './helpers/pipeline.ts';

describe('forEachLimited', () => {
  it('runs at most the limit at a time, starts items in order, and does each once', async () => {
    let running = 0;
    let most = 0;
    const started: number[] = [];
    await forEachLimited([...Array(25).keys()], 4, async (i) => {
      started.push(i);
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, (i * 7) % 5));
      running--;
    });
    expect(most).toBe(4);
    expect(started).toEqual([...Array(25).keys()]);
  });

  it('after a failure starts nothing new, waits for the running ones, then throws the first error', async () => {
    const done: number[] = [];
    let running = 0;
    const run = forEachLimited([0, 1, 2, 3, 4, 5, 6, 7], 3, async (i) => {
      running++;
      await new Promise((r) => setTimeout(r, i === 1 ? 1 : 20));
      running--;
      if (i === 1) throw new Error('one failed');
      done.push(i);
    });
    await expect(run).rejects.toThrow('one failed');
    expect(running, 'nothing still running when it throws').toBe(0);
    // 0 and 2 were running when 1 failed; nothing after them was started
    expect(done.sort()).toEqual([0, 2]);
  });

  it('an empty list is done at once', async () => {
    await forEachLimited([], 8, () => Promise.reject(new Error('not called')));
  });
});

/**
 * G2/G3: reconciliation asks the carrier about several messages at a time.
 * A message whose worker died before it learnt the carrier's id can only be
 * looked up by number and body; when several of ours share both, each must
 * be matched to a carrier message of its own (a carrier message matched to
 * two of ours would hide a lost one, or charge one twice).
 */
describe('reconciliation looking up several messages at once', () => {
  it('matches messages with the same number and body to distinct carrier messages, and the others by their own look-ups', async () => {
    // The carrier accepts every create and never answers; callbacks come
    // long after the test, so only reconciliation can settle the messages.
    const p = await startPipeline({
      withWorker: false,
      faults: { hangAfterAccept: 1 },
      timeoutMs: 8_000,
      callbackDelayMs: { sent: [120_000, 120_000], final: [120_000, 120_000] },
    });
    try {
      await grantCredits(p, 40);
      const to = '+14155552671';
      const same: string[] = [];
      const other: string[] = [];
      for (let i = 0; i < 8; i++) same.push((await sendViaApi(p, { to, body: 'Your order has shipped.' })).json.id as string);
      for (let i = 0; i < 8; i++) other.push((await sendViaApi(p, { to, body: `Order ${i} has shipped.` })).json.id as string);
      for (let i = 0; i < 4; i++) other.push((await sendViaApi(p, { to: `+1415555280${i}`, body: 'Your order has shipped.' })).json.id as string);
      await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
      const ids = [...same, ...other];
      // a worker's batch: the carrier has them all, the worker hears nothing back
      const hung = sendBatch(p.sendDeps, ids).catch(() => undefined);
      await eventually(async () => (p.simulator.log().length === ids.length ? true : undefined), 10_000, 'the carrier to accept all');
      for (const id of ids) expect((await message(p, id)).status).toBe('sending');

      // the lease (2 s in tests) passes with the worker still waiting; one
      // reconciliation settles them all, with no match refused by the unique
      // carrier id (a second pass would hide a double match)
      await eventually(async () => {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages
          where id = any(${ids}::text[]) and status = 'sending' and lease_until < now()`.execute(p.tdb.db);
        return rows[0]!.n === ids.length ? true : undefined;
      }, 10_000, 'the leases to pass');
      expect(await reconcile(p.sendDeps)).toEqual({ checked: ids.length, settled: ids.length, requeued: 0, givenUp: 0 });
      const rows = await Promise.all(ids.map((id) => message(p, id)));
      for (const r of rows) expect(r.status).toBe('sent');
      const sids = rows.map((r) => r.provider_sid);
      expect(new Set(sids).size, 'each carrier message matched to one of ours').toBe(ids.length);
      expect(new Set(sids)).toEqual(new Set(p.simulator.log().map((m) => m.sid)));
      for (const r of rows) {
        const atCarrier = p.simulator.log().find((m) => m.sid === r.provider_sid)!;
        expect([atCarrier.to, atCarrier.body]).toEqual([r.to_number, r.body]);
      }
      await hung;
      // the worker's late "no answer" changes nothing, and nothing was sent twice
      for (const id of ids) expect((await message(p, id)).status).toBe('sent');
      expect(p.simulator.log()).toHaveLength(ids.length);
    } finally {
      await p.close();
    }
  }, 60_000);
});
