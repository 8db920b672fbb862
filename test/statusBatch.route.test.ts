import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import type { CallbackResult } from '../src/messaging/index.ts';
import { campaignAction, createCampaign, inFlight, makeAudience } from './helpers/campaigns.ts';
import { storedAccount } from './helpers/orgs.ts';
import { eventually, grantCredits, message, type Pipeline, startPipeline } from './helpers/pipeline.ts';
import { params, startStatusBatchPipeline, statusBatchHelpers } from './helpers/statusBatch.ts';

/**
 * The status-callback batcher and the real HTTP route together: undelivered
 * callbacks posted several times at once through both (captured once,
 * refunded once, and against `delivered` the ledger follows whichever won);
 * a commit the database refuses (every request of the batch rejected, the
 * route answers 500 so the carrier retries); and a campaign-sized burst whose
 * callbacks the simulator posts itself, duplicated and reordered.
 *
 * Except in the burst, messages are made through the API and moved on by the
 * real steps (dispatch, the send step against the simulator), and the
 * simulator's own callbacks are held back (delays of ten minutes) so that the
 * callbacks each test submits are the only ones.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startStatusBatchPipeline();
});
afterAll(async () => {
  await p?.close();
});

const { batcherFor, create, toSent, statuses, eventsSince, lastEventSeq, capturesDrained, postStatus } = statusBatchHelpers(() => p);

describe('undelivered', () => {
  it('posted several times at once (batcher and HTTP route), it is captured once and refunded once; against delivered, the ledger follows whichever won', async () => {
    await sql`update organizations set refund_undelivered = true where id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    const undelivered = await create(6, 'undelivered');
    const contested = await create(6, 'contested');
    const all = [...undelivered, ...contested];
    const sids = await toSent(all);
    // captured by the drain first (the callback's own capture is then refused, harmlessly), and
    // no other capture still pending moves the balances while this test watches them
    await capturesDrained();
    const before = await storedAccount(p.tdb.db, p.tenant.organizationId);
    const since = await lastEventSeq();
    const batcher = batcherFor();
    const submitted: { id: string; kind: string; answer: Promise<CallbackResult | number> }[] = [];
    for (const id of undelivered) {
      for (let i = 0; i < 5; i++) submitted.push({ id, kind: 'undelivered', answer: batcher.submit(id, params(sids.get(id)!, 'undelivered', 30003)) });
      for (let i = 0; i < 2; i++) submitted.push({ id, kind: 'http', answer: postStatus(id, params(sids.get(id)!, 'undelivered', 30003)) });
    }
    for (const id of contested) {
      for (let i = 0; i < 3; i++) {
        submitted.push({ id, kind: 'undelivered', answer: batcher.submit(id, params(sids.get(id)!, 'failed', 30001)) });
        submitted.push({ id, kind: 'delivered', answer: batcher.submit(id, params(sids.get(id)!, 'delivered')) });
      }
    }
    const answers = await Promise.all(submitted.map((s) => s.answer));
    await batcher.close();

    for (const [i, s] of submitted.entries()) if (s.kind === 'http') expect(answers[i]).toBe(200);
    const now = await statuses(all);
    const events = await eventsSince(all, since);
    const { rows: ledger } = await sql<{ message_id: string; kind: string; n: number }>`select message_id, kind, count(*)::int as n from ledger_entries
      where message_id = any(${all}::text[]) group by 1, 2`.execute(p.tdb.db);
    const entries = (id: string, kind: string) => ledger.find((l) => l.message_id === id && l.kind === kind)?.n ?? 0;
    let refunded = 0;
    for (const id of all) {
      const status = now.get(id)!.status;
      if (undelivered.includes(id)) expect(status).toBe('undelivered');
      else expect(['delivered', 'undelivered']).toContain(status);
      const mine = submitted.map((s, i) => ({ ...s, a: answers[i] })).filter((s) => s.id === id && s.kind !== 'http');
      expect(mine.every((s) => s.a === 'applied' || s.a === 'duplicate_or_stale'), id).toBe(true);
      const applied = (kind: string) => mine.filter((s) => s.kind === kind && s.a === 'applied').length;
      const copies = (kind: string) => mine.filter((s) => s.kind === kind).length;
      if (status === 'delivered') {
        // the `delivered` copies went in one batch: applied once, answered 'applied' to each copy
        expect([applied('delivered'), applied('undelivered')], id).toEqual([copies('delivered'), 0]);
      } else {
        // each `undelivered`/`failed` takes the one-message path on its own: at most one applies
        // (exactly one unless one of the HTTP posts, whose answer is not visible here, won)
        expect(applied('delivered'), id).toBe(0);
        if (undelivered.includes(id)) expect(applied('undelivered'), id).toBeLessThanOrEqual(1);
        else expect(applied('undelivered'), id).toBe(1);
      }
      expect(events.get(id), id).toEqual(status === 'delivered' ? { carrier_delivered: 1 } : { carrier_undelivered: 1 });
      expect(entries(id, 'reserve'), id).toBe(1);
      expect(entries(id, 'capture'), id).toBe(1);
      expect(entries(id, 'refund'), id).toBe(status === 'undelivered' ? 1 : 0);
      if (status === 'undelivered') refunded += (await message(p, id)).cost;
    }
    expect(refunded).toBeGreaterThanOrEqual(undelivered.length);
    const after = await storedAccount(p.tdb.db, p.tenant.organizationId);
    expect(after).toEqual({ ...before, purchased: before.purchased + refunded, spent: before.spent - refunded });
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  });
});

describe('a commit the database refuses', () => {
  it('rejects every request of the batch (the route answers 500, the carrier retries), and nothing of it is kept', async () => {
    const ids = await create(5, 'refused');
    const sids = await toSent(ids);
    const [bad, ...good] = ids as [string, ...string[]];
    // A deferred constraint trigger fails the COMMIT itself (not a statement)
    // whenever a refused message was updated in the transaction.
    await sql`create table test_refuse_commit (id text primary key)`.execute(p.tdb.db);
    await sql`create function test_refuse_commit() returns trigger language plpgsql as $$
      begin
        if exists (select 1 from test_refuse_commit where id = new.id) then raise exception 'commit refused for %', new.id; end if;
        return null;
      end $$`.execute(p.tdb.db);
    await sql`create constraint trigger test_refuse_commit after update on messages deferrable initially deferred
      for each row execute function test_refuse_commit()`.execute(p.tdb.db);
    try {
      await sql`insert into test_refuse_commit values (${bad})`.execute(p.tdb.db);
      const since = await lastEventSeq();
      const batcher = batcherFor();
      const outcomes = await Promise.allSettled(ids.map((id) => batcher.submit(id, params(sids.get(id)!, 'delivered'))));
      await batcher.close();
      expect(outcomes.map((o) => o.status)).toEqual(ids.map(() => 'rejected'));
      expect(String((outcomes[0] as PromiseRejectedResult).reason)).toMatch(/commit refused/);
      for (const [id, s] of await statuses(ids)) expect(s.status, id).toBe('sent');
      expect([...(await eventsSince(ids, since)).values()]).toEqual(ids.map(() => ({})));

      // through the route: not a 200, so the carrier posts it again
      expect(await postStatus(bad, params(sids.get(bad)!, 'delivered'))).toBe(500);
      expect((await message(p, bad)).status).toBe('sent');

      // the database accepts again: the retried callbacks apply
      await sql`delete from test_refuse_commit`.execute(p.tdb.db);
      expect(await postStatus(bad, params(sids.get(bad)!, 'delivered'))).toBe(200);
      const again = batcherFor();
      expect(await Promise.all(good.map((id) => again.submit(id, params(sids.get(id)!, 'delivered'))))).toEqual(good.map(() => 'applied'));
      await again.close();
      for (const [id, s] of await statuses(ids)) expect(s.status, id).toBe('delivered');
      expect([...(await eventsSince(ids, since)).values()]).toEqual(ids.map(() => ({ carrier_delivered: 1 })));
    } finally {
      await sql`drop trigger if exists test_refuse_commit on messages`.execute(p.tdb.db);
      await sql`drop function if exists test_refuse_commit()`.execute(p.tdb.db);
      await sql`drop table if exists test_refuse_commit`.execute(p.tdb.db);
    }
  });
});

describe('a campaign-sized burst through the real route', () => {
  let q: Pipeline;
  beforeAll(async () => {
    // the simulator posts the callbacks itself: quickly, duplicated and reordered
    q = await startPipeline({ senderMps: 1000, faults: { duplicateCallbacks: 0.5, reorderCallbacks: 0.3 } });
  });
  afterAll(async () => {
    await q?.close();
  });

  it('300 recipients: every message delivered, one delivered event each, never moved back, charged once each', async () => {
    const audience = await makeAudience(q, 300, { firstPhone: 5000 });
    await grantCredits(q, 300);
    const { id } = await createCampaign(q, audience.listId);
    expect((await campaignAction(q, id, 'start')).statusCode).toBe(200);
    await eventually(
      async () => {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where campaign_id = ${id} and status = 'delivered'`.execute(q.tdb.db);
        return rows[0]!.n === 300 && (await inFlight(q, id)) === 0 ? true : undefined;
      },
      40_000,
      'all 300 delivered',
    );
    const { rows: ev } = await sql<{ message_id: string; to_status: string; from_status: string | null; n: number }>`
      select e.message_id, e.to_status, e.from_status, count(*)::int as n from message_events e join messages m on m.id = e.message_id
      where m.campaign_id = ${id} group by 1, 2, 3`.execute(q.tdb.db);
    const perMessage = new Map<string, { to: string; from: string | null; n: number }[]>();
    for (const e of ev) perMessage.set(e.message_id, [...(perMessage.get(e.message_id) ?? []), { to: e.to_status, from: e.from_status, n: e.n }]);
    expect(perMessage.size).toBe(300);
    for (const [mid, list] of perMessage) {
      const into = (s: string) => list.filter((x) => x.to === s).reduce((t, x) => t + x.n, 0);
      expect(into('delivered'), mid).toBe(1);
      expect(into('sent'), mid).toBeLessThanOrEqual(1);
      // nothing ever moved out of a final status
      expect(list.filter((x) => x.from === 'delivered'), mid).toEqual([]);
    }
    // the carrier sent each once, and every callback was taken (no 5xx, no retries given up)
    const log = q.simulator.log();
    expect(new Set(log.map((m) => m.to)).size).toBe(300);
    expect(log).toHaveLength(300);
    const stats = q.simulator.stats().callbacks;
    expect(stats.duplicated).toBeGreaterThan(0);
    expect(stats.failedAttempts).toBe(0);
    expect(stats.gaveUp).toBe(0);
    await eventually(async () => {
      const acc = await storedAccount(q.tdb.db, q.tenant.organizationId);
      return acc.spent === 300 && acc.reservedPurchased === 0 ? acc : undefined;
    });
    expect((await credits.verifyLedger(q.tdb.db)).mismatches).toEqual([]);
  }, 60_000);
});
