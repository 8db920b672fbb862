import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallbackResult } from '../src/messaging/index.ts';
import { createRandom } from '../src/shared/random.ts';
import { storedAccount } from './helpers/orgs.ts';
import { message, type Pipeline } from './helpers/pipeline.ts';
import { keyOf, newSid, params, shuffle, startStatusBatchPipeline, statusBatchHelpers, type Submission } from './helpers/statusBatch.ts';

/**
 * The status-callback batcher against real messages: many callbacks at once,
 * duplicated and shuffled, and one batch at a time against a sequential model
 * of the state machine; callbacks for another carrier message or an unknown
 * one. (Held rows, undelivered, a refused commit and the HTTP route:
 * statusBatch.held.test.ts and statusBatch.route.test.ts.)
 *
 * Messages are made through the API and moved on by the real steps
 * (dispatch, claim, the send step against the simulator). The simulator's
 * own callbacks are held back (delays of ten minutes) so that the callbacks
 * each test submits are the only ones.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startStatusBatchPipeline();
});
afterAll(async () => {
  await p?.close();
});

const { batcherFor, create, toSending, toSent, statuses, eventsSince, lastEventSeq, capturesDrained } = statusBatchHelpers(() => p);

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
