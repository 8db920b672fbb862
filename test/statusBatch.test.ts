import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { sql } from 'kysely';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { twilioSignature } from '../src/carriers/signature.ts';
import * as credits from '../src/credits/index.ts';
import { type CallbackResult, createStatusCallbackBatcher, dispatchOrganization, sendBatch } from '../src/messaging/index.ts';
import { claim } from '../src/messaging/claim.ts';
import { createRandom } from '../src/shared/random.ts';
import { silentLog } from './helpers/app.ts';
import { campaignAction, createCampaign, inFlight, makeAudience } from './helpers/campaigns.ts';
import { storedAccount } from './helpers/orgs.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * The status-callback batcher against real messages: many callbacks at once,
 * duplicated and shuffled; callbacks for another carrier message or an
 * unknown one; a message held by another transaction; concurrent refunds;
 * a commit the database refuses; and a burst through the real HTTP route.
 *
 * Messages are made through the API and moved on by the real steps
 * (dispatch, claim, the send step against the simulator). The simulator's
 * own callbacks are held back (delays of ten minutes) so that the callbacks
 * each test submits are the only ones.
 */
const FAR = { sent: [600_000, 600_000] as [number, number], final: [600_000, 600_000] as [number, number] };

let p: Pipeline;
let phone = 3000;

beforeAll(async () => {
  p = await startPipeline({ withWorker: false, callbackDelayMs: FAR });
  await grantCredits(p, 100_000);
  // this file sends far more than the default 100 transactional messages an hour
  await sql`update workspaces set hourly_cap = null where id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
});
afterAll(async () => {
  await p?.close();
});

const newSid = () => `SM${randomBytes(16).toString('hex')}`;
const batcherFor = (options: { maxBatch?: number; maxInFlight?: number } = {}) =>
  createStatusCallbackBatcher({ db: p.tdb.db, log: silentLog }, options);

/** `n` messages through the API, `planned`. */
async function create(n: number, label: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 25) {
    const chunk = await Promise.all(
      Array.from({ length: Math.min(25, n - i) }, (_, j) => sendViaApi(p, { to: `+1415555${String(phone++).padStart(4, '0')}`, body: `${label} ${i + j}` })),
    );
    for (const r of chunk) {
      expect(r.statusCode).toBe(202);
      ids.push(r.json.id as string);
    }
  }
  return ids;
}

/** Dispatched and claimed: `sending`, no carrier id yet (a worker is between its carrier call and its outcome step). */
async function toSending(ids: string[]): Promise<void> {
  await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  const claimed = await claim(p.sendDeps, ids);
  expect(claimed).toHaveLength(ids.length);
}

/** Dispatched and sent to the simulator by the real send step: `sent`, with the carrier's sid. */
async function toSent(ids: string[]): Promise<Map<string, string>> {
  await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  for (let i = 0; i < ids.length; i += 50) await sendBatch(p.sendDeps, ids.slice(i, i + 50));
  const sids = new Map<string, string>();
  for (const id of ids) {
    const m = await message(p, id);
    expect(m.status).toBe('sent');
    expect(m.provider_sid).toMatch(/^SM/);
    sids.set(id, m.provider_sid!);
  }
  return sids;
}

async function statuses(ids: readonly string[]): Promise<Map<string, { status: string; provider_sid: string | null }>> {
  const { rows } = await sql<{ id: string; status: string; provider_sid: string | null }>`
    select id, status, provider_sid from messages where id = any(${[...ids]}::text[])`.execute(p.tdb.db);
  return new Map(rows.map((r) => [r.id, r]));
}

/** Events after `sinceSeq`, per message: event name → count. */
async function eventsSince(ids: readonly string[], sinceSeq = 0): Promise<Map<string, Record<string, number>>> {
  const { rows } = await sql<{ message_id: string; event: string; n: number }>`
    select message_id, event, count(*)::int as n from message_events
    where message_id = any(${[...ids]}::text[]) and seq > ${sinceSeq} group by 1, 2`.execute(p.tdb.db);
  const out = new Map<string, Record<string, number>>(ids.map((id) => [id, {}]));
  for (const r of rows) out.get(r.message_id)![r.event] = r.n;
  return out;
}

async function lastEventSeq(): Promise<number> {
  const { rows } = await sql<{ seq: number | null }>`select max(seq)::int as seq from message_events`.execute(p.tdb.db);
  return rows[0]!.seq ?? 0;
}

/** The pipeline's capturer has applied every queued capture (balances stand still from here). */
async function capturesDrained(): Promise<void> {
  await eventually(async () => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from capture_queue`.execute(p.tdb.db);
    return rows[0]!.n === 0 ? true : undefined;
  });
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

const params = (sid: string, status: string, errorCode?: number) => ({
  MessageSid: sid,
  MessageStatus: status,
  ...(errorCode !== undefined && { ErrorCode: String(errorCode) }),
});

/** A status callback through the real route, signed as the carrier signs it. */
async function postStatus(id: string, form: Record<string, string>): Promise<number> {
  const url = `${p.apiUrl}/webhooks/twilio/status?message_id=${encodeURIComponent(id)}`;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature(p.simulator.accounts[0]!.authToken, url, form) },
    body: new URLSearchParams(form).toString(),
  });
  await res.text();
  return res.status;
}

/** Backends of this database waiting for a lock (the one-message path blocked on a held row). */
async function lockWaiters(): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock'`.execute(p.tdb.db);
  return rows[0]!.n;
}

/** A promise's answer, readable without awaiting it. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  const done = promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return { state, done };
}

interface Submission {
  id: string;
  status: 'sent' | 'delivered';
  sid: string;
}
const keyOf = (s: Submission) => `${s.id}|${s.status}|${s.sid}`;

describe('many callbacks at once', () => {
  it('200 messages × sent + delivered, each duplicated, shuffled, all at once: delivered, one event each, answers consistent per batch', async () => {
    const ids = await create(200, 'burst');
    await toSending(ids);
    const sids = new Map(ids.map((id) => [id, newSid()]));
    const random = createRandom(7);
    const subs: Submission[] = [];
    for (const id of ids) {
      for (const status of ['sent', 'delivered'] as const) {
        // every callback once, plus one to three duplicates
        const copies = 2 + Math.floor(random() * 3);
        for (let c = 0; c < copies; c++) subs.push({ id, status, sid: sids.get(id)! });
      }
    }
    shuffle(subs, random);
    const since = await lastEventSeq();
    // small batches, two in flight: batches race each other on the same messages
    const maxBatch = 97;
    const batcher = batcherFor({ maxBatch, maxInFlight: 2 });
    // all in one turn of the event loop, so batch k is exactly subs[k·maxBatch, (k+1)·maxBatch)
    const results = await Promise.all(subs.map((s) => batcher.submit(s.id, params(s.sid, s.status))));
    await batcher.close();

    const now = await statuses(ids);
    const events = await eventsSince(ids, since);
    for (const id of ids) {
      expect(now.get(id)).toMatchObject({ status: 'delivered', provider_sid: sids.get(id) });
      const e = events.get(id)!;
      expect(e.carrier_delivered, id).toBe(1);
      expect(e.carrier_sent ?? 0, id).toBeLessThanOrEqual(1);
      expect(Object.keys(e).filter((k) => k !== 'carrier_sent' && k !== 'carrier_delivered'), id).toEqual([]);
    }

    // per callback (message, status, sid): the batches it was in, and the answers in each
    const byKey = new Map<string, Map<number, Set<CallbackResult>>>();
    subs.forEach((s, i) => {
      const batches = byKey.get(keyOf(s)) ?? new Map<number, Set<CallbackResult>>();
      const batch = Math.floor(i / maxBatch);
      batches.set(batch, (batches.get(batch) ?? new Set()).add(results[i]!));
      byKey.set(keyOf(s), batches);
    });
    expect(new Set(results)).toEqual(new Set(['applied', 'duplicate_or_stale']));
    let appliedSent = 0;
    for (const [key, batches] of byKey) {
      const [id, status] = key.split('|') as [string, 'sent' | 'delivered'];
      // a duplicate in the same batch gets the same answer as its twin
      for (const answers of batches.values()) expect(answers.size, key).toBe(1);
      const appliedIn = [...batches.values()].filter((a) => a.has('applied')).length;
      // applied in exactly one batch, as the events say: every other batch answers duplicate_or_stale
      const expected = status === 'delivered' ? 1 : (events.get(id)!.carrier_sent ?? 0);
      expect(appliedIn, key).toBe(expected);
      if (status === 'sent') appliedSent += appliedIn;
    }
    // most `sent` callbacks still found the message sending (a shuffled `delivered` may come first)
    expect(appliedSent).toBeGreaterThan(0);
  }, 60_000);

  it('one batch at a time, the answers are exactly what a sequential model of the state machine predicts (property)', async () => {
    const ids = await create(24, 'model');
    await toSending(ids);
    const unknownIds = ['msg_does_not_exist_1', 'msg_does_not_exist_2'];
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            message: fc.integer({ min: 0, max: ids.length + unknownIds.length - 1 }),
            status: fc.constantFrom('sent' as const, 'delivered' as const),
          }),
          { minLength: 1, maxLength: 120 },
        ),
        fc.integer({ min: 1, max: 40 }),
        async (plan, maxBatch) => {
          // every message starts again from `sending` without a carrier id
          await sql`update messages set status = 'sending', provider_sid = null, provider_status = null, sent_at = null, terminal_at = null
            where id = any(${ids}::text[])`.execute(p.tdb.db);
          const sids = new Map(ids.map((id) => [id, newSid()]));
          const all = [...ids, ...unknownIds];
          const subs = plan.map((x) => ({ id: all[x.message]!, status: x.status, sid: sids.get(all[x.message]!) ?? newSid() }));
          const since = await lastEventSeq();
          const batcher = batcherFor({ maxBatch, maxInFlight: 1 });
          const results = await Promise.all(subs.map((s) => batcher.submit(s.id, params(s.sid, s.status))));
          await batcher.close();

          // the model: batches one after the other; in each, `sent` steps then `delivered` steps, a
          // duplicate within a batch answered like its twin; what did not move is stale or unknown
          const state = new Map(ids.map((id) => [id, 'sending' as 'sending' | 'sent' | 'delivered']));
          const expected: CallbackResult[] = [];
          for (let b = 0; b < subs.length; b += maxBatch) {
            const batch = subs.slice(b, b + maxBatch);
            const answers = new Map<string, CallbackResult>();
            for (const status of ['sent', 'delivered'] as const) {
              for (const s of batch.filter((x) => x.status === status)) {
                if (answers.has(keyOf(s))) continue;
                const now = state.get(s.id);
                if (now === undefined) answers.set(keyOf(s), 'unknown_message');
                else if (status === 'sent' ? now === 'sending' : now !== 'delivered') {
                  answers.set(keyOf(s), 'applied');
                  state.set(s.id, status);
                } else answers.set(keyOf(s), 'duplicate_or_stale');
              }
            }
            expected.push(...batch.map((s) => answers.get(keyOf(s))!));
          }
          expect(results).toEqual(expected);
          const stored = await statuses(ids);
          const events = await eventsSince(ids, since);
          for (const id of ids) {
            expect(stored.get(id)!.status).toBe(state.get(id));
            const applied = subs.filter((s, i) => s.id === id && results[i] === 'applied');
            const appliedKinds = new Set(applied.map((s) => s.status));
            expect(events.get(id)).toEqual({
              ...(appliedKinds.has('sent') && { carrier_sent: 1 }),
              ...(appliedKinds.has('delivered') && { carrier_delivered: 1 }),
            });
            expect(stored.get(id)!.provider_sid).toBe(appliedKinds.size > 0 ? sids.get(id) : null);
          }
          const { rows } = await sql<{ n: number }>`select count(*)::int as n from message_events where message_id = any(${unknownIds}::text[])`.execute(p.tdb.db);
          expect(rows[0]!.n).toBe(0);
        },
      ),
      { numRuns: 25, seed: 4242 },
    );
  }, 60_000);
});

describe('callbacks that name another carrier message, or no message', () => {
  it('a sid other than the message’s is mismatched_sid and changes nothing; an unknown message id is unknown_message', async () => {
    const ids = await create(2, 'mismatch');
    const sids = await toSent(ids);
    const [a, b] = ids as [string, string];
    await capturesDrained();
    const since = await lastEventSeq();
    const before = await storedAccount(p.tdb.db, p.tenant.organizationId);
    const batcher = batcherFor();
    const wrong = newSid();
    const results = await Promise.all([
      batcher.submit(a, params(wrong, 'sent')),
      batcher.submit(a, params(wrong, 'delivered')),
      batcher.submit(a, params(wrong, 'undelivered', 30003)),
      batcher.submit(a, params(wrong, 'failed', 30001)),
      // another message's real sid is just as wrong
      batcher.submit(a, params(sids.get(b)!, 'delivered')),
      batcher.submit('msg_unknown', params(wrong, 'sent')),
      batcher.submit('msg_unknown', params(wrong, 'delivered')),
      batcher.submit('msg_unknown', params(wrong, 'undelivered', 30003)),
    ]);
    expect(results).toEqual([
      'mismatched_sid',
      'mismatched_sid',
      'mismatched_sid',
      'mismatched_sid',
      'mismatched_sid',
      'unknown_message',
      'unknown_message',
      'unknown_message',
    ]);
    expect(await batcher.submit(a, { MessageSid: sids.get(a)!, MessageStatus: 'no-such-status' })).toBe('unknown_status');
    expect(await statuses(ids)).toEqual(
      new Map([
        [a, { id: a, status: 'sent', provider_sid: sids.get(a) }],
        [b, { id: b, status: 'sent', provider_sid: sids.get(b) }],
      ]),
    );
    expect(await eventsSince([...ids, 'msg_unknown'], since)).toEqual(new Map([[a, {}], [b, {}], ['msg_unknown', {}]]));
    expect(await storedAccount(p.tdb.db, p.tenant.organizationId)).toEqual(before);

    // the right sid still applies, and a late wrong one after it changes nothing
    expect(await batcher.submit(a, params(sids.get(a)!, 'delivered'))).toBe('applied');
    expect(await batcher.submit(a, params(wrong, 'delivered'))).toBe('mismatched_sid');
    expect((await message(p, a)).status).toBe('delivered');
    await batcher.close();
  });

  it('a message without a carrier id takes the sid of the first callback; a different sid after that is mismatched_sid, in the same batch too', async () => {
    const ids = await create(2, 'first sid');
    await toSending(ids);
    const [a, b] = ids as [string, string];
    const [sa, sb, other] = [newSid(), newSid(), newSid()];
    const batcher = batcherFor();
    // a: `sent` and a `delivered` for another carrier message, in one batch
    // b: `sent`, then in a later batch a `delivered` for another carrier message
    const first = await Promise.all([batcher.submit(a, params(sa, 'sent')), batcher.submit(a, params(other, 'delivered')), batcher.submit(b, params(sb, 'sent'))]);
    expect(first).toEqual(['applied', 'mismatched_sid', 'applied']);
    expect(await batcher.submit(b, params(other, 'delivered'))).toBe('mismatched_sid');
    const now = await statuses(ids);
    expect(now.get(a)).toMatchObject({ status: 'sent', provider_sid: sa });
    expect(now.get(b)).toMatchObject({ status: 'sent', provider_sid: sb });
    await batcher.close();
  });

  // One step per message and status in a batch: a callback naming another sid
  // for that step is answered by the one-message path (mismatched), never 'applied'.
  it('delivered for the message’s sid and for another sid in one batch: applied, and mismatched_sid', async () => {
    const [a] = (await create(1, 'two sids, sent')) as [string];
    const sids = await toSent([a]);
    const other = newSid();
    const batcher = batcherFor();
    const results = await Promise.all([batcher.submit(a, params(sids.get(a)!, 'delivered')), batcher.submit(a, params(other, 'delivered'))]);
    await batcher.close();
    expect(await message(p, a)).toMatchObject({ status: 'delivered', provider_sid: sids.get(a) });
    expect(results).toEqual(['applied', 'mismatched_sid']);
  });

  it('two sent callbacks with different sids for a message without a carrier id, in one batch: one applied, the other mismatched_sid', async () => {
    const [b] = (await create(1, 'two sids, sending')) as [string];
    await toSending([b]);
    const [s1, s2] = [newSid(), newSid()];
    const since = await lastEventSeq();
    const batcher = batcherFor();
    const results = await Promise.all([batcher.submit(b, params(s1, 'sent')), batcher.submit(b, params(s2, 'sent'))]);
    await batcher.close();
    const stored = await message(p, b);
    expect(stored.status).toBe('sent');
    expect((await eventsSince([b], since)).get(b)).toEqual({ carrier_sent: 1 });
    expect(results).toEqual(stored.provider_sid === s1 ? ['applied', 'mismatched_sid'] : ['mismatched_sid', 'applied']);
  });
});

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
