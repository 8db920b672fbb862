import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { dispatchOrganization, drainSenderQueue, sendBatch } from '../src/messaging/index.ts';
import { bearer } from './helpers/app.ts';
import { grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * What changes while a claim waits — behind another claim's locks, or for
 * its sender's rate slot — still counts when the carrier call is made: the
 * recipient's window closing (G5), a credit rollback that leaves debt (G6).
 */
let p: Pipeline | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** limits.ts's advisory lock key for an identity */
const lockKey = (identity: string) => createHash('sha256').update(identity).digest().readBigInt64BE(0);

/**
 * The workspace's transactional window (UTC recipients) ends at the next whole minute at
 * least 4 s away (windows are whole minutes); returns that instant.
 */
async function transactionalWindowEndingSoon(pipe: Pipeline): Promise<number> {
  const end = Math.ceil((Date.now() + 4_000) / 60_000) * 60_000;
  const d = new Date(end);
  const hhmm =
    d.getUTCHours() === 0 && d.getUTCMinutes() === 0 ? '24:00' : `${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}`;
  const rules = await pipe.app.inject({
    method: 'PATCH',
    url: `/v1/workspaces/${pipe.tenant.workspaceId}/sending-rules`,
    headers: bearer(pipe.tenant.orgKey),
    payload: { send_windows: { transactional: { start: '00:00', end: hhmm } } },
  });
  expect(rules.statusCode, rules.body).toBe(200);
  return end;
}

/**
 * A US message and a Canadian one, both queued; then Canada leaves the allow-list, so a claim of
 * the two refuses the second, and refusing takes the account row (its credits back) last, after
 * the claim's decisions. Returns their ids, the US one first.
 */
async function queuedWithOneToRefuse(pipe: Pipeline, a: { to: string; body: string }, b: { to: string; body: string }): Promise<string[]> {
  await sql`update workspaces set allowed_countries = array['US','CA'] where id = ${pipe.tenant.workspaceId}`.execute(pipe.tdb.db);
  const ids: string[] = [];
  for (const m of [a, b]) ids.push((await sendViaApi(pipe, { ...m, timezone: 'UTC' })).json.id as string);
  await dispatchOrganization(pipe.tdb.db, pipe.tenant.organizationId);
  for (const id of ids) expect((await message(pipe, id)).status).toBe('queued');
  await sql`update workspaces set allowed_countries = array['US'] where id = ${pipe.tenant.workspaceId}`.execute(pipe.tdb.db);
  return ids;
}

/** Runs `sendBatch` of `ids` while another transaction holds the organization's account row for `holdMs`. */
async function sendBatchBehindAccountRow(pipe: Pipeline, ids: string[], holdMs: number): Promise<{ attempted: number }> {
  const other = new pg.Client({ connectionString: pipe.tdb.url });
  await other.connect();
  await other.query('begin');
  await other.query('select 1 from credit_accounts where organization_id = $1 for update', [pipe.tenant.organizationId]);
  const sending = sendBatch(pipe.sendDeps, ids);
  await sleep(holdMs);
  await other.query('commit');
  await other.end();
  return sending;
}

describe('checks at the moment of sending', () => {
  it("a claim that waited behind another claim's lock past the end of the recipient's window does not send", { timeout: 120_000 }, async () => {
    // the default grace: a call window (57.5 s) longer than the wait below, so the claim still takes
    // its slot and decides again (with the helper's 2.5 s window it would take none, and leave the
    // message to its sender's queue: the call window tests below)
    p = await startPipeline({ senderMps: 1000, withWorker: false, lookupGraceMs: 60_000 });
    await grantCredits(p, 1_000);
    const end = await transactionalWindowEndingSoon(p);
    const to = '+14155559876';
    const res = await sendViaApi(p, { to, body: 'Your order shipped', purpose: 'transactional', timezone: 'UTC' });
    expect(res.statusCode).toBe(202);
    const id = res.json.id as string;
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    expect((await message(p, id)).status).toBe('queued');

    // 2.5 s before the window ends (its 2 s slot horizon still fits), another claim of the
    // workspace holds the hourly-cap lock for 5 s
    await sleep(end - 2_500 - Date.now());
    const other = new pg.Client({ connectionString: p.tdb.url });
    await other.connect();
    await other.query('begin');
    await other.query('select pg_advisory_xact_lock($1)', [String(lockKey(`hourly:${p.tenant.workspaceId}`))]);
    const sending = sendBatch(p.sendDeps, [id]);
    await sleep(5_000);
    await other.query('commit');
    await other.end();
    await sending;

    const m = await message(p, id);
    expect(m.status).toBe('deferred');
    expect(m.status_reason).toBe('quiet_hours');
    expect(p.simulator.log().filter((e) => e.to === to)).toHaveLength(0);
  });

  it("a claim whose commit waited for the account row past the end of the recipient's window does not send", { timeout: 120_000 }, async () => {
    p = await startPipeline({ senderMps: 1000, withWorker: false });
    const pipe = p;
    await grantCredits(p, 1_000);
    const end = await transactionalWindowEndingSoon(p);
    // B (Canada) is refused by the claim, which takes the account row last
    const ids = await queuedWithOneToRefuse(p, { to: '+14155559876', body: 'A' }, { to: '+16045550123', body: 'B' });
    await sleep(end - 2_500 - Date.now());
    await sendBatchBehindAccountRow(p, ids, 5_000);
    expect(pipe.simulator.log().filter((e) => e.to === '+14155559876')).toHaveLength(0);
    // sent back to be claimed anew, its attempt given back; the next claim defers it to the window's opening
    const back = await message(p, ids[0]!);
    expect(back).toMatchObject({ status: 'queued', status_reason: 'decision_expired', attempts: 0 });
    await sendBatch(p.sendDeps, [ids[0]!]);
    expect(await message(p, ids[0]!)).toMatchObject({ status: 'deferred', status_reason: 'quiet_hours' });
  });

  it('an operator rollback that leaves debt stops a claimed message still waiting for its rate slot', { timeout: 60_000 }, async () => {
    p = await startPipeline({ senderMps: 1, withWorker: false });
    await grantCredits(p, 10);
    const a = await sendViaApi(p, { to: '+14155551001', body: 'one' });
    const b = await sendViaApi(p, { to: '+14155551002', body: 'two' });
    const ids = [a.json.id as string, b.json.id as string];
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    for (const id of ids) expect((await message(p, id)).status).toBe('queued');

    const sending = sendBatch(p.sendDeps, ids); // 1 a second: the second waits about 1 s for its slot
    await sleep(300);
    const rollback = await p.app.inject({
      method: 'POST',
      url: `/v1/organizations/${p.tenant.organizationId}/credits/adjustments`,
      headers: bearer(p.op),
      payload: { amount: -50, reason: 'chargeback rollback', idempotency_key: 'rb-1' },
    });
    expect(rollback.statusCode, rollback.body).toBe(201);
    expect((rollback.json() as { balances: { debt: number } }).balances.debt).toBeGreaterThan(0);
    await sending;

    expect(p.simulator.log().map((e) => e.to)).toEqual(['+14155551001']);
    const second = await message(p, ids[1]!);
    expect(second).toMatchObject({ status: 'blocked', status_reason: 'debt_outstanding' });
  });
});

describe('the call window', () => {
  it('a claimed message whose commit waited past the call window is not called but claimed anew, and goes out once', { timeout: 60_000 }, async () => {
    p = await startPipeline({ senderMps: 1000, withWorker: false });
    const pipe = p;
    await grantCredits(p, 100);
    // the helper's grace is the carrier timeout + 3 s: a call must begin within 2.5 s of the claim
    // (callWindowMs). B (Canada) is refused by the claim, which takes the account row last.
    const ids = await queuedWithOneToRefuse(p, { to: '+14155559801', body: 'window A' }, { to: '+16045550124', body: 'window B' });
    expect(await sendBatchBehindAccountRow(p, ids, 3_500)).toEqual({ attempted: 1 });
    expect(pipe.simulator.log().filter((m) => m.body.startsWith('window '))).toHaveLength(0);
    expect(await message(p, ids[0]!)).toMatchObject({ status: 'queued', status_reason: 'call_window_passed', attempts: 0 });
    // claimed again: sent, once
    await sendBatch(p.sendDeps, [ids[0]!]);
    expect(pipe.simulator.log().filter((m) => m.body.startsWith('window ')).map((m) => m.body)).toEqual(['window A']);
  });

  it('a claim takes no sender slot past its call window: what does not fit waits in the sender queue', { timeout: 60_000 }, async () => {
    // a call window of 1.1 s (grace less the carrier's 2 s timeout less 0.5 s) against the 2 s slot
    // horizon: slots 250 ms apart, at most four fit. Before, all eight were given slots, the last
    // three past the window: not called, claimed anew, and each took another slot out at the
    // horizon, wasted in turn (with claims slow enough, for good: CI's stalled slow-carrier run)
    p = await startPipeline({ senderMps: 4, withWorker: false, lookupGraceMs: 2_000 + 1_600 });
    const pipe = p;
    await grantCredits(p, 100);
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await sendViaApi(p, { to: `+1415555981${i}`, body: `slots ${i}` });
      expect(res.statusCode).toBe(202);
      ids.push(res.json.id as string);
    }
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    const before = Date.now();
    const { attempted } = await sendBatch(p.sendDeps, ids);
    expect(attempted).toBeGreaterThanOrEqual(1);
    expect(attempted).toBeLessThanOrEqual(4);
    const atCarrier = () => pipe.simulator.log().filter((m) => m.body.startsWith('slots '));
    expect(atCarrier()).toHaveLength(attempted);
    const rows = await Promise.all(ids.map((id) => message(pipe, id)));
    expect(rows.filter((m) => m.status_reason === 'call_window_passed')).toEqual([]);
    const waiting = rows.filter((m) => m.status === 'queued');
    expect(waiting).toHaveLength(8 - attempted);
    for (const m of waiting) expect(m).toMatchObject({ status_reason: 'sender_rate', attempts: 0 });
    // the sender's frontier is where the claim's last slot ended, inside the window
    const { rows: s } = await sql<{ next: Date }>`select next_slot_at as next from sender_numbers where workspace_id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
    expect(s[0]!.next.getTime()).toBeLessThanOrEqual(before + 1_100 + 250);
    // the rest go through the sender's queue, once each
    for (let turn = 0; turn < 20 && atCarrier().length < 8; turn++) {
      await sleep(300);
      await drainSenderQueue(p.sendDeps, { workspaceId: p.tenant.workspaceId, fromNumber: rows[0]!.from_number });
    }
    expect(atCarrier().map((m) => m.body).sort()).toEqual(ids.map((_, i) => `slots ${i}`));
  });
});
