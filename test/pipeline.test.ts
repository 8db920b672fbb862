import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTwilioCarrier } from '../src/carriers/index.ts';
import * as credits from '../src/credits/index.ts';
import { createIntakeBatcher, sendBatch } from '../src/messaging/index.ts';
import { newId } from '../src/shared/ids.ts';
import { bearer } from './helpers/app.ts';
import { storedAccount } from './helpers/orgs.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline, waitForStatus } from './helpers/pipeline.ts';

const TO = '+14155552671';

describe('happy path and API contract', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline();
    await grantCredits(p, 100);
  });
  afterAll(async () => p.close());

  it('a message goes planned → queued → sending → sent → delivered, captured once, one copy at the carrier', async () => {
    const res = await sendViaApi(p, { to: '+1 (415) 555-2671', body: 'Your code is 1234' });
    expect(res.statusCode).toBe(202);
    expect(res.json).toMatchObject({ to: TO, segments: 1, encoding: 'GSM-7', cost: 1, status: 'planned' });
    const id = res.json.id as string;
    const m = await waitForStatus(p, id, ['delivered']);
    expect(m.provider_sid).toMatch(/^SM/);
    const detail = await p.app.inject({ method: 'GET', url: `/v1/messages/${id}`, headers: bearer(p.tenant.workspaceKey) });
    // into `sent` by the outcome step (`accepted`) or, when the carrier's `sent` callback (5–20 ms after
    // it accepted) is applied before that step commits, by the callback: both are the same transition
    const events = detail.json().events.map((e: { event: string }) => e.event) as string[];
    expect(events).toEqual(['created', 'reserved', 'claim', events[3] === 'carrier_sent' ? 'carrier_sent' : 'accepted', 'carrier_delivered']);
    expect(p.simulator.log().filter((x) => x.to === TO && x.body === 'Your code is 1234')).toHaveLength(1);
    // the capture is owed from the outcome step's commit and applied by the drain moments later (captures.ts)
    const acc = await eventually(async () => {
      const a = await storedAccount(p.tdb.db, p.tenant.organizationId);
      return a.reservedPurchased === 0 ? a : undefined;
    }, 10_000, 'the capture');
    expect(acc).toMatchObject({ spent: 1, reservedPurchased: 0, purchased: 99 });
  });

  it('bad input is a 422 naming the field, and nothing is stored', async () => {
    const before = (await sql<{ n: number }>`select count(*)::int as n from messages`.execute(p.tdb.db)).rows[0]!.n;
    for (const [payload, field] of [
      [{ to: '+1555', body: 'x' }, 'to'],
      [{ to: 'not a phone', body: 'x' }, 'to'],
      [{ to: TO, body: '' }, 'body'],
      [{ to: TO, body: 'x'.repeat(1601) }, 'body'],
      [{ to: TO, body: 'x', purpose: 'spam' }, 'purpose'],
      [{ to: TO, body: 'x', send_at: 'tomorrow' }, 'send_at'],
      [{ to: TO, body: 'x', colour: 'red' }, 'colour'],
      // PostgreSQL cannot store U+0000: a 422, not a 500 from the database
      [{ to: TO, body: 'Your code\u0000 is 1234' }, 'body'],
    ] as const) {
      const res = await sendViaApi(p, payload as { to: string; body: string });
      expect(res.statusCode, JSON.stringify(payload)).toBe(422);
      expect((res.json.errors as { field: string }[]).map((e) => e.field)).toContain(field);
    }
    const after = (await sql<{ n: number }>`select count(*)::int as n from messages`.execute(p.tdb.db)).rows[0]!.n;
    expect(after).toBe(before);
  });

  it('the same Idempotency-Key returns the same message; with another body it is 409', async () => {
    const results = await Promise.all(Array.from({ length: 5 }, () => sendViaApi(p, { to: TO, body: 'Order #77 shipped' }, 'order-77')));
    const ids = new Set(results.map((r) => r.json.id));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => r.statusCode === 202)).toHaveLength(1);
    expect(results.filter((r) => r.statusCode === 200)).toHaveLength(4);
    const conflict = await sendViaApi(p, { to: TO, body: 'Order #78 shipped' }, 'order-77');
    expect(conflict.statusCode).toBe(409);
    await waitForStatus(p, [...ids][0] as string, ['delivered']);
    expect(p.simulator.log().filter((x) => x.body === 'Order #77 shipped')).toHaveLength(1);
  });

  it('one burst, one batch of inserts: a key used with two bodies stores one message, the other body is 409, the rest are all stored', async () => {
    const keyed = Array.from({ length: 10 }, (_, i) => sendViaApi(p, { to: TO, body: i % 2 === 0 ? 'burst A' : 'burst B' }, 'burst-key'));
    const plain = Array.from({ length: 30 }, (_, i) => sendViaApi(p, { to: TO, body: `burst plain ${i}` }));
    const [k, q] = await Promise.all([Promise.all(keyed), Promise.all(plain)]);
    const stored = k.find((r) => r.statusCode === 202)!;
    expect(k.filter((r) => r.statusCode === 202)).toHaveLength(1);
    const winner = stored.json.body;
    for (const r of k) {
      if (r.json.body === winner || r.statusCode !== 409) expect(r.json.id).toBe(stored.json.id);
      else expect(r.statusCode).toBe(409);
    }
    expect(k.filter((r) => r.statusCode === 409)).toHaveLength(5);
    expect(q.every((r) => r.statusCode === 202)).toBe(true);
    expect(new Set(q.map((r) => r.json.id)).size).toBe(30);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where dedupe_key = 'api:burst-key'`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(1);
  });

  it('a NUL character in one request of a burst is that request refused; the others, sharing its intake batch, are stored', async () => {
    const burst = await Promise.all(
      Array.from({ length: 20 }, (_, i) => sendViaApi(p, { to: TO, body: i === 7 ? 'nul \u0000 burst' : `nul burst ${i}` })),
    );
    expect(burst.map((r) => r.statusCode)).toEqual(burst.map((_, i) => (i === 7 ? 422 : 202)));
    expect(burst[7]!.json).toMatchObject({ status: 422, errors: [{ field: 'body', in: 'body' }] });
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where body like 'nul burst %'`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(19);
    const query = await p.app.inject({ method: 'GET', url: '/v1/messages?to=%2B1415%00', headers: bearer(p.tenant.workspaceKey) });
    expect(query.statusCode).toBe(422);
    expect(query.json()).toMatchObject({ errors: [{ field: 'to', in: 'querystring' }] });
  });

  it('values the schema admits but JavaScript or PostgreSQL cannot take are 422s naming them, not 500s', async () => {
    const cursor = (b: string) => Buffer.from(JSON.stringify({ b })).toString('base64url');
    const get = (url: string) => p.app.inject({ method: 'GET', url, headers: bearer(p.tenant.workspaceKey) });
    const fieldsOf = (res: { statusCode: number; json(): unknown }) => (res.json() as { errors?: { field: string }[] }).errors?.map((e) => e.field);
    for (const [url, field] of [
      [`/v1/messages?cursor=${cursor('msg_\u0000')}`, 'cursor'],
      [`/v1/messages?cursor=${cursor("msg_' or 1=1")}`, 'cursor'],
      ['/v1/messages?from=2016-12-31T23:59:60Z', 'from'],
      ['/v1/messages?until=0000-01-01T00:00:00Z', 'until'],
      ['/v1/credits/ledger?from=2016-12-31T23:59:60Z', 'from'],
    ] as const) {
      const res = await get(url);
      expect(res.statusCode, url).toBe(422);
      expect(fieldsOf(res), url).toEqual([field]);
    }
    // year 0000 (or year 1 at +01:00, which is year 0 in UTC) as send_at: refused alone; a request sharing its intake batch is stored
    const [bad, early, good] = await Promise.all([
      sendViaApi(p, { to: TO, body: 'year zero', send_at: '0000-01-01T00:00:00Z' } as never),
      sendViaApi(p, { to: TO, body: 'year one', send_at: '0001-01-01T00:00:00+01:00' } as never),
      sendViaApi(p, { to: TO, body: 'an ordinary one beside it' }),
    ]);
    expect([bad.statusCode, early.statusCode, good.statusCode]).toEqual([422, 422, 202]);
    expect((bad.json.errors as { field: string }[]).map((e) => e.field)).toEqual(['send_at']);
    const sender = await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(p.tenant.workspaceKey), payload: { phone_number: '+14155550177', mps: 1e-20 } });
    expect(sender.statusCode).toBe(422);
  });

  it('a body is counted in characters, as promised (1,600), not in UTF-16 units: 1,000 emoji are accepted', async () => {
    const ok = await sendViaApi(p, { to: TO, body: '😀'.repeat(1000) });
    expect(ok.statusCode, JSON.stringify(ok.json)).toBe(202);
    expect(ok.json).toMatchObject({ encoding: 'UCS-2', segments: 30 }); // 2,000 UCS-2 units, 67 a part
    const over = await sendViaApi(p, { to: TO, body: '😀'.repeat(1601) });
    expect(over.statusCode).toBe(422);
    expect((over.json.errors as { field: string }[]).map((e) => e.field)).toEqual(['body']);
    // the check behind the schema's (campaign bodies, other callers) counts the same way
    const { priceMessage } = await import('../src/messaging/index.ts');
    expect(priceMessage(TO, '😀'.repeat(1600), undefined).segments).toBe(48);
    expect(() => priceMessage(TO, '😀'.repeat(1601), undefined)).toThrow('body: must be at most 1600 characters, got 1601');
  });

  it('intake batches: the same keys in opposite orders do not deadlock, and a row PostgreSQL refuses fails alone', async () => {
    const batcher = createIntakeBatcher(p.tdb.db, { maxBatch: 100 });
    // due in 300 days: never dispatched (and never spending this tenant's credits) while the pipeline runs
    const row = (key: string, sendAt = new Date(Date.now() + 300 * 86_400_000)) => ({
      id: newId('msg'),
      organization_id: p.tenant.organizationId,
      workspace_id: p.tenant.workspaceId,
      dedupe_key: `api:${key}`,
      request_hash: 'h',
      producer: 'api' as const,
      campaign_id: null,
      purpose: 'transactional' as const,
      to_number: TO,
      country: 'US',
      from_number: '+14155550100',
      body: 'batch order',
      encoding: 'GSM-7' as const,
      segments: 1,
      cost: 1,
      send_at: sendAt,
    });
    try {
      const results: PromiseSettledResult<unknown>[] = [];
      for (let round = 0; round < 5; round++) {
        const keys = Array.from({ length: 100 }, (_, i) => `order-${round}-${i}`);
        const forward = keys.map((k) => batcher.insert(row(k)));
        await new Promise((r) => setImmediate(r));
        const backward = [...keys].reverse().map((k) => batcher.insert(row(k)));
        results.push(...(await Promise.allSettled([...forward, ...backward])));
      }
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      const [poisoned, ...fine] = await Promise.allSettled([batcher.insert(row('poison', new Date('0000-01-01T00:00:00Z'))), ...[1, 2, 3].map((i) => batcher.insert(row(`fine-${i}`)))]);
      expect(poisoned!.status).toBe('rejected');
      expect(fine.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    } finally {
      await batcher.close();
      // these rows were never meant to be sent: out of the way of the tests that follow
      await sql`update messages set status = 'skipped', status_reason = 'test' where body = 'batch order' and status = 'planned'`.execute(p.tdb.db);
    }
  });

  it('lists with filters, and another tenant sees nothing (404 on the message)', async () => {
    const list = await p.app.inject({ method: 'GET', url: `/v1/messages?status=delivered&to=${encodeURIComponent(TO)}`, headers: bearer(p.tenant.workspaceKey) });
    expect(list.statusCode).toBe(200);
    expect(list.json().data.length).toBeGreaterThanOrEqual(2);
    expect(list.json().data.every((m: { status: string }) => m.status === 'delivered')).toBe(true);
    const { createTenant } = await import('./helpers/app.ts');
    const other = await createTenant(p.app, p.op, 'Other');
    const id = list.json().data[0].id;
    expect((await p.app.inject({ method: 'GET', url: `/v1/messages/${id}`, headers: bearer(other.workspaceKey) })).statusCode).toBe(404);
    expect((await p.app.inject({ method: 'GET', url: '/v1/messages', headers: bearer(other.workspaceKey) })).json().data).toEqual([]);
  });

  it('forged or unsigned status callbacks are 403 and change nothing', async () => {
    const res = await sendViaApi(p, { to: TO, body: 'forgery target' });
    const id = res.json.id as string;
    const m = await waitForStatus(p, id, ['delivered']);
    const form = new URLSearchParams({ MessageSid: m.provider_sid!, MessageStatus: 'undelivered', ErrorCode: '30003' }).toString();
    for (const headers of [{}, { 'x-twilio-signature': 'bm90IGEgc2lnbmF0dXJl' }] as Record<string, string>[]) {
      const forged = await fetch(`${p.apiUrl}/webhooks/twilio/status?message_id=${id}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: form,
      });
      expect(forged.status).toBe(403);
    }
    expect((await message(p, id)).status).toBe('delivered');
  });
});

describe('credits gate the pipeline (G1)', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline();
  });
  afterAll(async () => p.close());

  it('sends what is paid for, blocks the rest, and resumes them when credits arrive', async () => {
    await grantCredits(p, 3);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await sendViaApi(p, { to: TO, body: `gate ${i}` })).json.id as string);
    const blocked = await eventually(async () => {
      const rows = await Promise.all(ids.map((id) => message(p, id)));
      return rows.filter((r) => r.status === 'blocked').length === 2 && rows.filter((r) => r.status === 'delivered').length === 3 ? rows : undefined;
    });
    expect(blocked.filter((r) => r.status === 'blocked').every((r) => r.status_reason === 'insufficient_credits')).toBe(true);
    expect(p.simulator.log().filter((x) => x.body.startsWith('gate '))).toHaveLength(3);
    const grant = await p.app.inject({
      method: 'POST',
      url: `/v1/organizations/${p.tenant.organizationId}/credits/grants`,
      headers: bearer(p.op),
      payload: { amount: 10, reason: 'top-up', idempotency_key: 'top-up-1' },
    });
    expect(grant.statusCode).toBe(201);
    for (const id of ids) await waitForStatus(p, id, ['delivered']);
    expect(p.simulator.log().filter((x) => x.body.startsWith('gate '))).toHaveLength(5);
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  });

  it('a gate that closes after reservation stops the claim and releases the credits (G6)', async () => {
    await p.stopWorker();
    const id = (await sendViaApi(p, { to: TO, body: 'frozen' })).json.id as string;
    // dispatch by hand: reserved and queued, not yet claimed
    const { dispatchOrganization } = await import('../src/messaging/index.ts');
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    expect((await message(p, id)).status).toBe('queued');
    await sql`update organizations set frozen_at = now() where id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    await sendBatch(p.sendDeps, [id]);
    const m = await message(p, id);
    expect(m).toMatchObject({ status: 'blocked', status_reason: 'organization_frozen', reservation_id: null });
    expect(p.simulator.log().filter((x) => x.body === 'frozen')).toHaveLength(0);
    expect((await storedAccount(p.tdb.db, p.tenant.organizationId)).reservedPurchased).toBe(0);
    await sql`update organizations set frozen_at = null where id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    await p.startWorker();
  });
});

describe('exactly one claim wins (G2)', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline({ withWorker: false });
    await grantCredits(p, 100);
  });
  afterAll(async () => p.close());

  it('five concurrent send steps over the same batch send each message once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await sendViaApi(p, { to: TO, body: `race ${i}` })).json.id as string);
    const { dispatchOrganization } = await import('../src/messaging/index.ts');
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    const results = await Promise.all(Array.from({ length: 5 }, () => sendBatch(p.sendDeps, ids)));
    expect(results.reduce((s, r) => s + r.attempted, 0)).toBe(20);
    for (let i = 0; i < 20; i++) expect(p.simulator.log().filter((x) => x.body === `race ${i}`)).toHaveLength(1);
    const acc = await eventually(async () => {
      const a = await storedAccount(p.tdb.db, p.tenant.organizationId);
      return a.spent === 20 ? a : undefined;
    });
    expect(acc.reservedPurchased).toBe(0);
  });
});

describe('a queued message another transaction holds when its send job runs', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline({ withWorker: false });
    await grantCredits(p, 100);
  });
  afterAll(async () => p.close());

  const sendJobsFor = async (id: string) =>
    (
      await sql<{ id: string; ids: string[]; run_at: Date }>`select j.id::text, j.payload->'messageIds' as ids, j.run_at from graphile_worker._private_jobs j
        join graphile_worker._private_tasks t on t.id = j.task_id where t.identifier = 'send' and j.payload::jsonb->'messageIds' ? ${id}`.execute(p.tdb.db)
    ).rows;

  it('a dispatch that began before the message was queued holds it; the send job gives it a job of its own, not the 2-minute sweep', async () => {
    const { dispatchOrganization } = await import('../src/messaging/index.ts');
    const id = (await sendViaApi(p, { to: TO, body: 'held' })).json.id as string;
    // A second dispatch: its statement (and snapshot) begins while the message is planned, then waits.
    const late = await p.tdb.pool.connect();
    try {
      const pid = (await late.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      await late.query('begin');
      const scan = late.query(
        `select m.id from messages m where m.id = $1 and m.status = 'planned' and (select pg_sleep(3)) is not null for update of m skip locked`,
        [id],
      );
      await eventually(async () => {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where pid = ${pid} and wait_event = 'PgSleep'`.execute(p.tdb.db);
        return rows[0]!.n > 0 ? true : undefined;
      }, 10_000, 'the late dispatch to have begun');
      // the first dispatch queues the message and adds its send job, and commits
      await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
      expect((await message(p, id)).status).toBe('queued');
      const [job] = await sendJobsFor(id);
      expect(job).toBeDefined();
      // the late one finds it no longer planned, yet keeps the lock it took on the queued row
      expect((await scan).rows).toEqual([]);

      // the send job runs meanwhile: it cannot claim the message, and does not drop it
      const before = Date.now();
      expect(await sendBatch(p.sendDeps, job!.ids)).toEqual({ attempted: 0 });
      expect((await message(p, id)).status).toBe('queued');
      const again = (await sendJobsFor(id)).filter((j) => j.id !== job!.id);
      expect(again).toHaveLength(1);
      expect(again[0]!.ids).toEqual([id]);
      expect(again[0]!.run_at.getTime()).toBeGreaterThanOrEqual(before);
      expect(again[0]!.run_at.getTime()).toBeLessThan(before + 10_000);
      await late.query('commit');
    } finally {
      await late.query('rollback').catch(() => undefined);
      late.release();
    }
    // its own job, once the holder is gone: sent once
    expect(await sendBatch(p.sendDeps, [id])).toEqual({ attempted: 1 });
    await waitForStatus(p, id, ['delivered']);
    expect(p.simulator.log().filter((x) => x.body === 'held')).toHaveLength(1);
  });

  it('a message the send job cannot claim because it moved on gets no new job', async () => {
    const { dispatchOrganization } = await import('../src/messaging/index.ts');
    const id = (await sendViaApi(p, { to: TO, body: 'moved on' })).json.id as string;
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    expect(await sendBatch(p.sendDeps, [id])).toEqual({ attempted: 1 });
    const jobs = (await sendJobsFor(id)).length;
    // the same job again (a duplicate): the message is no longer queued
    expect(await sendBatch(p.sendDeps, [id])).toEqual({ attempted: 0 });
    expect(await sendJobsFor(id)).toHaveLength(jobs);
    expect(p.simulator.log().filter((x) => x.body === 'moved on')).toHaveLength(1);
  });
});

describe('carrier faults', () => {
  it('a permanent error fails the message and releases its credits', async () => {
    const p = await startPipeline({ faults: { errors: { '21211': 1 } } });
    try {
      await grantCredits(p, 5);
      const id = (await sendViaApi(p, { to: TO, body: 'permanent' })).json.id as string;
      const m = await waitForStatus(p, id, ['failed']);
      expect(m).toMatchObject({ status_reason: 'carrier_error', error_code: 21211, attempts: 1 });
      expect(await storedAccount(p.tdb.db, p.tenant.organizationId)).toMatchObject({ purchased: 5, spent: 0, reservedPurchased: 0 });
    } finally {
      await p.close();
    }
  });

  it('transient errors are retried with backoff, keeping the reservation, then succeed', async () => {
    const p = await startPipeline({ faults: { errors: { '20429': 1 } } });
    try {
      await grantCredits(p, 5);
      const id = (await sendViaApi(p, { to: TO, body: 'transient' })).json.id as string;
      await eventually(async () => ((await message(p, id)).attempts >= 2 ? true : undefined));
      expect((await storedAccount(p.tdb.db, p.tenant.organizationId)).reservedPurchased).toBe(1);
      p.simulator.setFaults({});
      const m = await waitForStatus(p, id, ['delivered']);
      expect(m.attempts).toBeGreaterThanOrEqual(3);
      expect(p.simulator.log().filter((x) => x.body === 'transient')).toHaveLength(1);
    } finally {
      await p.close();
    }
  });

  it('transient errors past the attempt limit fail and release', async () => {
    const p = await startPipeline({ faults: { errors: { '20503': 1 } } });
    try {
      await grantCredits(p, 5);
      const id = (await sendViaApi(p, { to: TO, body: 'exhausted' })).json.id as string;
      const m = await waitForStatus(p, id, ['failed'], 20_000);
      expect(m).toMatchObject({ status_reason: 'attempts_exhausted', attempts: 5 });
      expect(await storedAccount(p.tdb.db, p.tenant.organizationId)).toMatchObject({ purchased: 5, reservedPurchased: 0 });
    } finally {
      await p.close();
    }
  });

  it('an answer dropped after the carrier accepted: unknown, then settled by the callback, charged once, never resent', async () => {
    const p = await startPipeline({ faults: { dropAfterAccept: 1 } });
    try {
      await grantCredits(p, 5);
      const id = (await sendViaApi(p, { to: TO, body: 'dropped' })).json.id as string;
      const m = await waitForStatus(p, id, ['delivered']);
      const events = (await sql<{ event: string }>`select event from message_events where message_id = ${id} order by seq`.execute(p.tdb.db)).rows.map((r) => r.event);
      expect(events).toContain('claim');
      expect(m.provider_sid).toMatch(/^SM/);
      expect(p.simulator.log().filter((x) => x.body === 'dropped')).toHaveLength(1);
      // the capture is applied by the drain moments after the outcome step (captures.ts)
      const acc = await eventually(async () => {
        const a = await storedAccount(p.tdb.db, p.tenant.organizationId);
        return a.reservedPurchased === 0 ? a : undefined;
      }, 10_000, 'the capture');
      expect(acc).toMatchObject({ spent: 1, reservedPurchased: 0 });
    } finally {
      await p.close();
    }
  });

  it('no answer at all (timeout after hand-off): unknown, keeps the reservation, settled by the callback', async () => {
    const p = await startPipeline({ faults: { hangAfterAccept: 1 }, timeoutMs: 300 });
    try {
      await grantCredits(p, 5);
      const id = (await sendViaApi(p, { to: TO, body: 'hung' })).json.id as string;
      await waitForStatus(p, id, ['delivered']);
      const events = (await sql<{ event: string }>`select event from message_events where message_id = ${id} order by seq`.execute(p.tdb.db)).rows.map((r) => r.event);
      expect(events.slice(0, 3)).toEqual(['created', 'reserved', 'claim']);
      expect(p.simulator.log().filter((x) => x.body === 'hung')).toHaveLength(1);
      // captured by the worker's outcome step once its own call gives up
      await eventually(async () => {
        const acc = await storedAccount(p.tdb.db, p.tenant.organizationId);
        return acc.spent === 1 && acc.reservedPurchased === 0 ? acc : undefined;
      });
    } finally {
      await p.close();
    }
  });

  it('an outage that refuses connections: not sent, retried until the carrier is back', async () => {
    // The carrier stays down until the first attempt has been refused: a
    // window of fixed length could end before a loaded machine gets there.
    const p = await startPipeline({ faults: { outages: [{ startMs: 0, endMs: 3_600_000 }], outageMode: 'refuse' } });
    try {
      await grantCredits(p, 5);
      const id = (await sendViaApi(p, { to: TO, body: 'outage' })).json.id as string;
      const refused = await eventually(async () => {
        const m = await message(p, id);
        return m.attempts >= 1 && m.status === 'queued' ? m : undefined;
      }, 20_000, 'the first attempt to be refused');
      expect(refused.status_reason).toBe('transient_error');
      expect(p.simulator.log()).toHaveLength(0);
      p.simulator.setFaults({});
      const m = await waitForStatus(p, id, ['delivered'], 20_000);
      expect(m.attempts).toBeGreaterThanOrEqual(2);
      expect(p.simulator.log().filter((x) => x.body === 'outage')).toHaveLength(1);
    } finally {
      await p.close();
    }
  });

  it('duplicated and reordered callbacks: statuses only move forward, undelivered is refunded exactly once', async () => {
    const p = await startPipeline({ faults: { duplicateCallbacks: 1, reorderCallbacks: 1, finalStatus: { undelivered: 1 } } });
    try {
      await grantCredits(p, 5);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await sendViaApi(p, { to: TO, body: `dup ${i}` })).json.id as string);
      for (const id of ids) await waitForStatus(p, id, ['undelivered']);
      // let the late duplicates land, then check nothing moved again
      await eventually(async () => (p.simulator.stats().callbacks.posted >= 20 ? true : undefined));
      for (const id of ids) expect((await message(p, id)).status).toBe('undelivered');
      const kinds = (await sql<{ kind: string; n: number }>`select kind, count(*)::int as n from ledger_entries
        where organization_id = ${p.tenant.organizationId} group by kind order by kind`.execute(p.tdb.db)).rows;
      expect(Object.fromEntries(kinds.map((k) => [k.kind, k.n]))).toEqual({ grant: 1, reserve: 5, capture: 5, refund: 5 });
      expect(await storedAccount(p.tdb.db, p.tenant.organizationId)).toMatchObject({ purchased: 5, spent: 0, reservedPurchased: 0 });
      expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('final callbacks that never come: reconciliation asks the carrier, applies delivered and refunds undelivered', async () => {
    const p = await startPipeline({ faults: { loseFinalCallbacks: 1 } });
    try {
      await grantCredits(p, 5);
      const delivered = (await sendViaApi(p, { to: TO, body: 'lost callback, delivered' })).json.id as string;
      await waitForStatus(p, delivered, ['sent']);
      p.simulator.setFaults({ loseFinalCallbacks: 1, finalStatus: { undelivered: 1 } });
      const undelivered = (await sendViaApi(p, { to: TO, body: 'lost callback, undelivered' })).json.id as string;
      await waitForStatus(p, undelivered, ['sent']);
      await eventually(async () => (p.simulator.log().every((e) => e.status === e.finalStatus) ? true : undefined));
      await new Promise((r) => setTimeout(r, 500));
      expect((await message(p, delivered)).status, 'no callback: still sent').toBe('sent');
      expect(p.simulator.stats().callbacks.lost).toBe(2);

      // reconciliation (a minute cron in production) once the lease has passed
      await eventually(
        async () => {
          const { reconcile } = await import('../src/messaging/index.ts');
          await reconcile(p.sendDeps);
          const [a, b] = [await message(p, delivered), await message(p, undelivered)];
          return a.status === 'delivered' && b.status === 'undelivered' ? true : undefined;
        },
        15_000,
        'reconciliation to apply the final statuses',
      );
      expect(await storedAccount(p.tdb.db, p.tenant.organizationId)).toMatchObject({ purchased: 4, spent: 1, reservedPurchased: 0 });
      expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
      // settled: nothing more to ask
      const { reconcile } = await import('../src/messaging/index.ts');
      expect((await reconcile(p.sendDeps)).checked).toBe(0);
    } finally {
      await p.close();
    }
  });
  it('a look-up that fails does not count: the message is asked about again at the next reconciliation, not at twice its age', async () => {
    const p = await startPipeline({ faults: { loseFinalCallbacks: 1 } });
    try {
      await grantCredits(p, 5);
      const id = (await sendViaApi(p, { to: TO, body: 'lost callback, look-up fails' })).json.id as string;
      await waitForStatus(p, id, ['sent']);
      await eventually(async () => (p.simulator.log().every((e) => e.status === e.finalStatus) ? true : undefined));
      // the carrier cannot be reached (the same adapter, pointed at a closed port); the lease passes
      const account = p.simulator.accounts[0]!;
      const reachable = p.sendDeps.carrier;
      p.sendDeps.carrier = createTwilioCarrier({ accountSid: account.sid, authToken: account.authToken, baseUrl: 'http://127.0.0.1:1', timeoutMs: 2_000, publicUrl: p.apiUrl });
      await new Promise((r) => setTimeout(r, 2_500));
      const before = await message(p, id);
      const { reconcile } = await import('../src/messaging/index.ts');
      expect((await reconcile(p.sendDeps)).checked).toBe(1);
      const after = await message(p, id);
      expect(after.status).toBe('sent');
      expect(after.updated_at).toEqual(before.updated_at);
      // reachable again: the very next reconciliation applies the final status (before, the failed
      // look-up counted as asked, and the next one waited until half the message's age had passed again)
      p.sendDeps.carrier = reachable;
      await reconcile(p.sendDeps);
      expect((await message(p, id)).status).toBe('delivered');
    } finally {
      await p.close();
    }
  });
});

describe('sender throughput', () => {
  it('a sender with mps=4 sends no faster than 4 per second, across batches', async () => {
    const p = await startPipeline({ senderMps: 4 });
    try {
      await grantCredits(p, 20);
      const ids: string[] = [];
      for (let i = 0; i < 8; i++) ids.push((await sendViaApi(p, { to: TO, body: `paced ${i}` })).json.id as string);
      for (const id of ids) await waitForStatus(p, id, ['delivered'], 20_000);
      const times = p.simulator
        .log()
        .filter((m) => m.body.startsWith('paced '))
        .map((m) => Date.parse(m.acceptedAt))
        .sort((a, b) => a - b);
      expect(times).toHaveLength(8);
      // 8 sends at 4/s span at least 7 intervals of 250 ms (tolerance: the first send may leave late)
      expect(times[7]! - times[0]!).toBeGreaterThanOrEqual(7 * 250 - 150);
    } finally {
      await p.close();
    }
  });
});
