import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import type { Db } from '../src/db/db.ts';
import { dispatchOrganization, drainCaptures, handleStatusCallback, reconcile, sendBatch, startCapturer } from '../src/messaging/index.ts';
import { queueCaptures } from '../src/messaging/captures.ts';
import { newId } from '../src/shared/ids.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createRandom } from '../src/shared/random.ts';
import { silentLog } from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { insertOrg, storedAccount } from './helpers/orgs.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * The capture queue (G3: a message the carrier took ends captured, once):
 * drains racing each other and reconciliation over thousands of queued
 * captures; a queued capture whose reservation was settled meanwhile; the
 * captures of a process whose capturer is gone; a drain the database
 * refuses.
 */
const actor = { type: 'system' as const, id: 'test' };

async function queueSize(db: Db, organizationIds?: readonly string[]): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from capture_queue
    ${organizationIds ? sql`where organization_id = any(${[...organizationIds]}::text[])` : sql``}`.execute(db);
  return rows[0]!.n;
}

/** Capture ledger entries per reservation of these organizations. */
async function capturesPerReservation(db: Db, organizationIds: readonly string[]): Promise<Map<string, number>> {
  const { rows } = await sql<{ reservation_id: string; n: number }>`select reservation_id, count(*)::int as n from ledger_entries
    where kind = 'capture' and organization_id = any(${[...organizationIds]}::text[]) group by 1`.execute(db);
  return new Map(rows.map((r) => [r.reservation_id, r.n]));
}

describe('drains in parallel over thousands of queued captures', () => {
  let tdb: TestDatabase;
  beforeAll(async () => {
    tdb = await createTestDatabase({ poolSize: 12 });
  });
  afterAll(async () => {
    await tdb?.close();
  });

  it('capture each reservation exactly once, whatever the number of drains, their batch sizes, and reconciliation capturing some meanwhile (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 50, max: 1_400 }), { minLength: 2, maxLength: 3 }),
        fc.integer({ min: 2, max: 5 }),
        fc.array(fc.integer({ min: 40, max: 1_000 }), { minLength: 5, maxLength: 5 }),
        fc.integer({ min: 0, max: 30 }).map((percent) => percent / 100),
        fc.integer({ min: 1, max: 1_000_000 }),
        async (perOrg, drains, limits, reconciledShare, seed) => {
          const random = createRandom(seed);
          const db = tdb.db;
          const orgs: string[] = [];
          const reservations: { id: string; org: string; messageId: string; amount: number }[] = [];
          for (const n of perOrg) {
            const org = await insertOrg(db, 'capture org');
            orgs.push(org);
            await credits.grant(db, { organizationId: org, amount: n * 3, idempotencyKey: `grant-${org}`, actor });
            const items = Array.from({ length: n }, () => ({ messageId: newId('msg'), amount: 1 + Math.floor(random() * 3) }));
            for (let i = 0; i < items.length; i += 500) {
              const res = await credits.reserve(db, { organizationId: org, items: items.slice(i, i + 500), idempotencyKey: `reserve-${org}-${i}`, actor });
              expect(res.not_reserved).toEqual([]);
              for (const r of res.reserved) reservations.push({ id: r.reservation_id, org, messageId: r.message_id, amount: r.amount });
            }
          }
          // queued in shuffled order, in many small outcome-step transactions, some twice (a step run again)
          const order = [...reservations];
          for (let i = order.length - 1; i > 0; i--) {
            const j = Math.floor(random() * (i + 1));
            [order[i], order[j]] = [order[j]!, order[i]!];
          }
          for (let i = 0; i < order.length; i += 200) {
            const chunk = order.slice(i, i + 200).map((r) => ({ id: r.messageId, organization_id: r.org, reservation_id: r.id }));
            await db.transaction().execute((trx) => queueCaptures(trx, chunk));
            if (random() < 0.3) await db.transaction().execute((trx) => queueCaptures(trx, chunk.slice(0, 20)));
          }
          expect(await queueSize(db, orgs)).toBe(reservations.length);

          // reconciliation captures some of them directly while the drains run
          const reconciled = reservations.filter(() => random() < reconciledShare);
          const reconcile = (async () => {
            for (let i = 0; i < reconciled.length; i += 25) {
              const chunk = reconciled.slice(i, i + 25);
              for (const org of orgs) {
                const ids = chunk.filter((r) => r.org === org).map((r) => r.id);
                if (ids.length > 0) await credits.capture(db, { organizationId: org, reservationIds: ids, idempotencyKey: `reconcile:${newId('rsv')}`, actor });
              }
            }
          })();
          const drained = await Promise.all(
            Array.from({ length: drains }, async (_, d) => {
              let taken = 0;
              for (;;) {
                const n = await drainCaptures(db, limits[d]!);
                if (n === 0) return taken;
                taken += n;
              }
            }),
          );
          await reconcile;

          // every queue row taken by exactly one drain, and the queue empty
          expect(drained.reduce((a, b) => a + b, 0)).toBe(reservations.length);
          expect(await queueSize(db, orgs)).toBe(0);
          // every reservation captured, by exactly one ledger entry
          const captures = await capturesPerReservation(db, orgs);
          expect(captures.size).toBe(reservations.length);
          expect([...captures.values()].every((n) => n === 1)).toBe(true);
          const { rows: open } = await sql<{ n: number }>`select count(*)::int as n from credit_reservations
            where organization_id = any(${orgs}::text[]) and state <> 'captured'`.execute(db);
          expect(open[0]!.n).toBe(0);
          for (const [i, org] of orgs.entries()) {
            const owed = reservations.filter((r) => r.org === org).reduce((s, r) => s + r.amount, 0);
            expect(await storedAccount(db, org)).toMatchObject({ spent: owed, purchased: perOrg[i]! * 3 - owed, reservedPurchased: 0, reservedAllowance: 0 });
          }
          expect((await credits.verifyLedger(db)).mismatches).toEqual([]);
        },
      ),
      {
        numRuns: 6,
        seed: 20240611,
        // at least one run with a few thousand captures over three organizations
        examples: [[[1_400, 1_300, 1_200], 4, [1_000, 137, 40, 500, 999], 0.2, 7]],
      },
    );
  }, 55_000);
});

describe('through the send step', () => {
  const FAR = { sent: [600_000, 600_000] as [number, number], final: [600_000, 600_000] as [number, number] };
  let p: Pipeline;
  let phone = 6000;

  beforeAll(async () => {
    p = await startPipeline({ withWorker: false, callbackDelayMs: FAR });
    await grantCredits(p, 10_000);
    await sql`update workspaces set hourly_cap = null where id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
    await sql`update organizations set refund_undelivered = true where id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    // This process has no capturer: its outcome steps queue captures that nobody here drains.
    await p.capturer.stop();
    p.sendDeps.captures = undefined;
  });
  afterAll(async () => {
    await p?.close();
  });

  /** Messages sent by the real send step (this test acts as the worker process): `sent`, captures queued. */
  async function sendSome(n: number, label: string): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const res = await sendViaApi(p, { to: `+1415555${String(phone++).padStart(4, '0')}`, body: `${label} ${i}` });
      expect(res.statusCode).toBe(202);
      ids.push(res.json.id as string);
    }
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    await sendBatch(p.sendDeps, ids);
    for (const id of ids) expect((await message(p, id)).status).toBe('sent');
    return ids;
  }

  async function reservationStates(ids: readonly string[]): Promise<string[]> {
    const { rows } = await sql<{ state: string }>`select r.state from messages m join credit_reservations r on r.id = m.reservation_id
      where m.id = any(${[...ids]}::text[])`.execute(p.tdb.db);
    return rows.map((r) => r.state).sort();
  }

  it('a queued capture whose reservation was captured by reconciliation, or captured and refunded by an undelivered report, is refused harmlessly and removed', async () => {
    const before = await storedAccount(p.tdb.db, p.tenant.organizationId);
    const reconciled = await sendSome(6, 'reconciled');
    const refunded = await sendSome(3, 'refunded');
    const all = [...reconciled, ...refunded];
    expect(await queueSize(p.tdb.db)).toBe(all.length);
    expect(await reservationStates(all)).toEqual(all.map(() => 'open'));

    // reconciliation: the worker "died" before its capture was drained (the lease has long passed)
    await sql`update messages set updated_at = now() - interval '1 minute' where id = any(${reconciled}::text[])`.execute(p.tdb.db);
    await reconcile(p.sendDeps);
    expect(await reservationStates(reconciled)).toEqual(reconciled.map(() => 'captured'));
    // undelivered: captured, then refunded, in the callback's own transaction
    for (const id of refunded) {
      const m = await message(p, id);
      expect(await handleStatusCallback(p.sendDeps, id, { MessageSid: m.provider_sid!, MessageStatus: 'undelivered', ErrorCode: '30003' })).toBe('applied');
    }
    expect(await reservationStates(refunded)).toEqual(refunded.map(() => 'refunded'));
    expect(await queueSize(p.tdb.db)).toBe(all.length);

    expect(await drainCaptures(p.tdb.db)).toBe(all.length);
    expect(await queueSize(p.tdb.db)).toBe(0);
    expect(await drainCaptures(p.tdb.db)).toBe(0);
    const { rows } = await sql<{ kind: string; n: number }>`select kind, count(*)::int as n from ledger_entries
      where message_id = any(${all}::text[]) group by 1 order by 1`.execute(p.tdb.db);
    expect(Object.fromEntries(rows.map((r) => [r.kind, r.n]))).toEqual({ reserve: 9, capture: 9, refund: 3 });
    const after = await storedAccount(p.tdb.db, p.tenant.organizationId);
    expect(after).toMatchObject({ spent: before.spent + 6, purchased: before.purchased - 6, reservedPurchased: 0 });
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  });

  it('a process whose capturer stopped leaves its captures queued; another process’s capturer picks them up, and later ones by polling', async () => {
    const before = await storedAccount(p.tdb.db, p.tenant.organizationId);
    // process A drains its own captures, then its capturer stops (the process goes away)
    const a = startCapturer({ db: p.tdb.db, log: silentLog, pollMs: 60_000 });
    p.sendDeps.captures = a;
    try {
      const first = await sendSome(4, 'process A');
      await eventually(async () => ((await queueSize(p.tdb.db)) === 0 ? true : undefined), 5_000, 'A to drain its own captures');
      expect(await reservationStates(first)).toEqual(first.map(() => 'captured'));
      await a.stop();
      const left = await sendSome(5, 'left by A');
      a.wake(); // a stopped capturer does nothing, even when woken
      expect(await queueSize(p.tdb.db)).toBe(5);
      expect(await reservationStates(left)).toEqual(left.map(() => 'open'));

      // process B, which sends nothing itself: it takes the leftovers when it starts …
      const b = startCapturer({ db: p.tdb.db, log: silentLog, pollMs: 100 });
      try {
        await eventually(async () => ((await queueSize(p.tdb.db)) === 0 ? true : undefined), 5_000, 'B to take the leftovers');
        expect(await reservationStates(left)).toEqual(left.map(() => 'captured'));
        // … and captures queued later by a process without a capturer, by polling (nobody wakes B)
        p.sendDeps.captures = undefined;
        const later = await sendSome(5, 'queued later');
        await eventually(async () => ((await queueSize(p.tdb.db)) === 0 ? true : undefined), 5_000, 'B to poll');
        expect(await reservationStates(later)).toEqual(later.map(() => 'captured'));
      } finally {
        await b.stop();
      }
      const after = await storedAccount(p.tdb.db, p.tenant.organizationId);
      expect(after).toMatchObject({ spent: before.spent + 14, purchased: before.purchased - 14, reservedPurchased: 0 });
      expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
    } finally {
      await a.stop();
      p.sendDeps.captures = undefined;
    }
  });

  it('a drain the database refuses keeps its captures queued (delete and capture are one transaction); the capturer tries again and gets them', async () => {
    const before = await storedAccount(p.tdb.db, p.tenant.organizationId);
    const ids = await sendSome(5, 'refused drain');
    expect(await queueSize(p.tdb.db)).toBe(5);
    await sql`create table test_refuse_capture (on_ boolean)`.execute(p.tdb.db);
    await sql`create function test_refuse_capture() returns trigger language plpgsql as $$
      begin
        if new.kind = 'capture' and exists (select 1 from test_refuse_capture) then raise exception 'capture refused'; end if;
        return new;
      end $$`.execute(p.tdb.db);
    await sql`create trigger test_refuse_capture before insert on ledger_entries for each row execute function test_refuse_capture()`.execute(p.tdb.db);
    const warnings: string[] = [];
    const log = createLogger('warn', { write: (line: string) => void warnings.push(line) });
    try {
      await sql`insert into test_refuse_capture values (true)`.execute(p.tdb.db);
      await expect(drainCaptures(p.tdb.db)).rejects.toThrow(/capture refused/);
      expect(await queueSize(p.tdb.db)).toBe(5);
      expect(await reservationStates(ids)).toEqual(ids.map(() => 'open'));

      const c = startCapturer({ db: p.tdb.db, log, pollMs: 50 });
      try {
        await eventually(async () => (warnings.some((w) => w.includes('capture drain failed')) ? true : undefined), 5_000, 'the capturer to fail once');
        expect(await queueSize(p.tdb.db)).toBe(5);
        await sql`delete from test_refuse_capture`.execute(p.tdb.db);
        await eventually(async () => ((await queueSize(p.tdb.db)) === 0 ? true : undefined), 5_000, 'the capturer to try again');
      } finally {
        await c.stop();
      }
      expect(await reservationStates(ids)).toEqual(ids.map(() => 'captured'));
      expect(await storedAccount(p.tdb.db, p.tenant.organizationId)).toMatchObject({ spent: before.spent + 5, reservedPurchased: 0 });
      expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
    } finally {
      await sql`drop trigger if exists test_refuse_capture on ledger_entries`.execute(p.tdb.db);
      await sql`drop function if exists test_refuse_capture()`.execute(p.tdb.db);
      await sql`drop table if exists test_refuse_capture`.execute(p.tdb.db);
    }
  });
});
