import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { verifyLedger } from '../src/credits/index.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { insertOrg, storedAccount } from './helpers/orgs.ts';

let tdb: TestDatabase;
const system = { type: 'system' as const, id: 'test' };

beforeAll(async () => {
  tdb = await createTestDatabase({ poolSize: 20 });
});
afterAll(async () => {
  await tdb.close();
});

async function entryCount(org: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from ledger_entries where organization_id = ${org}`.execute(tdb.db);
  return rows[0]!.n;
}

describe('idempotency', () => {
  it('the same operation with the same key five times concurrently writes one entry', async () => {
    const org = await insertOrg(tdb.db);
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        credits.purchase(tdb.db, { organizationId: org, amount: 100, idempotencyKey: 'pay-1', actor: system, paymentRef: 'pi_1' }),
      ),
    );
    expect(results.filter((r) => !r.replayed).length).toBe(1);
    for (const r of results) expect(r.balances).toEqual(results[0]!.balances);
    expect(await entryCount(org)).toBe(1);
    expect((await storedAccount(tdb.db, org)).purchased).toBe(100);

    const reserves = await Promise.all(
      Array.from({ length: 5 }, () =>
        credits.reserve(tdb.db, {
          organizationId: org,
          items: [
            { messageId: 'm1', amount: 3 },
            { messageId: 'm2', amount: 4 },
          ],
          idempotencyKey: 'rsv-1',
          actor: system,
        }),
      ),
    );
    expect(reserves.filter((r) => !r.replayed).length).toBe(1);
    expect(new Set(reserves.map((r) => r.reserved.map((x) => x.reservation_id).join()))).toHaveProperty('size', 1);
    expect(await entryCount(org)).toBe(3);
    expect((await storedAccount(tdb.db, org)).reservedPurchased).toBe(7);
  });

  it('the same key with a different payload is a conflict and writes nothing', async () => {
    const org = await insertOrg(tdb.db);
    await credits.grant(tdb.db, { organizationId: org, amount: 10, idempotencyKey: 'g', actor: system });
    await expect(credits.grant(tdb.db, { organizationId: org, amount: 11, idempotencyKey: 'g', actor: system })).rejects.toMatchObject({
      code: 'idempotency_conflict',
    });
    await expect(
      credits.adjust(tdb.db, { organizationId: org, amount: 10, reason: 'x', idempotencyKey: 'g', actor: system }),
    ).rejects.toMatchObject({ code: 'idempotency_conflict' });
    expect(await entryCount(org)).toBe(1);
  });

  it('keys are per organization', async () => {
    const a = await insertOrg(tdb.db);
    const b = await insertOrg(tdb.db);
    await credits.grant(tdb.db, { organizationId: a, amount: 10, idempotencyKey: 'same', actor: system });
    const r = await credits.grant(tdb.db, { organizationId: b, amount: 20, idempotencyKey: 'same', actor: system });
    expect(r.replayed).toBe(false);
    expect((await storedAccount(tdb.db, b)).purchased).toBe(20);
  });
});

describe('two-phase spending', () => {
  it('capture twice, release twice, or release after capture is refused', async () => {
    const org = await insertOrg(tdb.db);
    await credits.grant(tdb.db, { organizationId: org, amount: 10, idempotencyKey: 'g', actor: system });
    const r = await credits.reserve(tdb.db, {
      organizationId: org,
      items: [
        { messageId: 'a', amount: 2 },
        { messageId: 'b', amount: 3 },
      ],
      idempotencyKey: 'r',
      actor: system,
    });
    const [ra, rb] = r.reserved.map((x) => x.reservation_id) as [string, string];
    const c1 = await credits.capture(tdb.db, { organizationId: org, reservationIds: [ra], idempotencyKey: 'c1', actor: system });
    expect(c1.items[0]).toMatchObject({ outcome: 'captured' });
    const c2 = await credits.capture(tdb.db, { organizationId: org, reservationIds: [ra], idempotencyKey: 'c2', actor: system });
    expect(c2.items[0]).toMatchObject({ outcome: 'refused', reason: 'already_captured' });
    const rel = await credits.release(tdb.db, { organizationId: org, reservationIds: [ra, rb, rb], idempotencyKey: 'r1', actor: system });
    expect(rel.items.map((i) => [i.outcome, i.reason])).toEqual([
      ['refused', 'already_captured'],
      ['released', undefined],
      ['refused', 'already_released'],
    ]);
    const rel2 = await credits.release(tdb.db, { organizationId: org, reservationIds: [rb], idempotencyKey: 'r2', actor: system });
    expect(rel2.items[0]).toMatchObject({ outcome: 'refused', reason: 'already_released' });
    expect(await storedAccount(tdb.db, org)).toEqual({
      allowance: 0,
      purchased: 8,
      reservedAllowance: 0,
      reservedPurchased: 0,
      spent: 2,
      debt: 0,
    });
    // a refund gives the captured credits back, once
    const f1 = await credits.refund(tdb.db, { organizationId: org, reservationIds: [ra], idempotencyKey: 'f1', actor: system });
    expect(f1.items[0]).toMatchObject({ outcome: 'refunded' });
    const f2 = await credits.refund(tdb.db, { organizationId: org, reservationIds: [ra, rb], idempotencyKey: 'f2', actor: system });
    expect(f2.items.map((i) => i.reason)).toEqual(['already_refunded', 'already_released']);
    expect((await storedAccount(tdb.db, org)).purchased).toBe(10);
    expect((await verifyLedger(tdb.db)).mismatches).toEqual([]);
  });

  it('a message never holds two open reservations', async () => {
    const org = await insertOrg(tdb.db);
    await credits.grant(tdb.db, { organizationId: org, amount: 10, idempotencyKey: 'g', actor: system });
    const first = await credits.reserve(tdb.db, { organizationId: org, items: [{ messageId: 'x', amount: 2 }], idempotencyKey: 'r1', actor: system });
    const second = await credits.reserve(tdb.db, {
      organizationId: org,
      items: [
        { messageId: 'x', amount: 2 },
        { messageId: 'x', amount: 2 },
      ],
      idempotencyKey: 'r2',
      actor: system,
    });
    expect(second.reserved).toEqual([{ ...first.reserved[0], existing: true }]);
    expect((await storedAccount(tdb.db, org)).reservedPurchased).toBe(2);
  });

  it('a batch reserves exactly the affordable prefix and reports the rest', async () => {
    const org = await insertOrg(tdb.db);
    await credits.renewAllowance(tdb.db, { organizationId: org, amount: 4, period: 'p1', periodStart: new Date(), idempotencyKey: 'n1', actor: system });
    await credits.grant(tdb.db, { organizationId: org, amount: 3, idempotencyKey: 'g', actor: system });
    const items = Array.from({ length: 10 }, (_, i) => ({ messageId: `m${i}`, amount: 1 }));
    const r = await credits.reserve(tdb.db, { organizationId: org, items, idempotencyKey: 'r', actor: system });
    expect(r.reserved.map((x) => x.message_id)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6']);
    expect(r.reserved.slice(0, 4).every((x) => x.from_allowance === 1)).toBe(true);
    expect(r.reserved.slice(4).every((x) => x.from_purchased === 1)).toBe(true);
    expect(r.not_reserved.map((x) => [x.message_id, x.reason])).toEqual([
      ['m7', 'insufficient_credits'],
      ['m8', 'insufficient_credits'],
      ['m9', 'insufficient_credits'],
    ]);
    expect(r.balances.available).toBe(0);
  });
});

describe('rollbacks and debt', () => {
  it('a rollback larger than what is available records debt, blocks reservations, and a purchase repays it first', async () => {
    const org = await insertOrg(tdb.db);
    await credits.grant(tdb.db, { organizationId: org, amount: 10, idempotencyKey: 'g', actor: system });
    await credits.reserve(tdb.db, { organizationId: org, items: [{ messageId: 'a', amount: 6 }], idempotencyKey: 'r', actor: system });
    const adj = await credits.adjust(tdb.db, { organizationId: org, amount: -10, reason: 'granted by mistake', idempotencyKey: 'a1', actor: system });
    expect(adj).toMatchObject({ taken_from_available: 4, added_to_debt: 6 });
    expect(await storedAccount(tdb.db, org)).toMatchObject({ purchased: 0, reservedPurchased: 6, debt: 6 });
    const blocked = await credits.reserve(tdb.db, { organizationId: org, items: [{ messageId: 'b', amount: 1 }], idempotencyKey: 'r2', actor: system });
    expect(blocked.not_reserved).toEqual([{ message_id: 'b', amount: 1, reason: 'debt_outstanding' }]);
    const p = await credits.purchase(tdb.db, { organizationId: org, amount: 10, idempotencyKey: 'p', actor: system, paymentRef: 'pi' });
    expect(p).toMatchObject({ debt_repaid: 6, balances: { purchased: 4, debt: 0 } });
    const ok = await credits.reserve(tdb.db, { organizationId: org, items: [{ messageId: 'b', amount: 1 }], idempotencyKey: 'r3', actor: system });
    expect(ok.reserved.length).toBe(1);
    const kinds = await sql<{ kind: string }>`select kind from ledger_entries where organization_id = ${org} order by seq`.execute(tdb.db);
    expect(kinds.rows.map((r) => r.kind)).toEqual(['grant', 'reserve', 'adjust', 'purchase', 'debt_repayment', 'reserve']);
    expect((await verifyLedger(tdb.db)).mismatches).toEqual([]);
  });

  it('a release after a renewal does not bring expired allowance back', async () => {
    const org = await insertOrg(tdb.db);
    await credits.renewAllowance(tdb.db, { organizationId: org, amount: 10, period: 'nov', periodStart: new Date(), idempotencyKey: 'nov', actor: system });
    const r = await credits.reserve(tdb.db, { organizationId: org, items: [{ messageId: 'a', amount: 4 }], idempotencyKey: 'r', actor: system });
    const renewal = await credits.renewAllowance(tdb.db, { organizationId: org, amount: 10, period: 'dec', periodStart: new Date(), idempotencyKey: 'dec', actor: system });
    expect(renewal.expired).toBe(6);
    await credits.release(tdb.db, { organizationId: org, reservationIds: [r.reserved[0]!.reservation_id], idempotencyKey: 'rel', actor: system });
    expect(await storedAccount(tdb.db, org)).toMatchObject({ allowance: 10, reservedAllowance: 0 });
    expect((await verifyLedger(tdb.db)).mismatches).toEqual([]);
  });
});

describe('the ledger is append-only and verifiable', () => {
  it('UPDATE and DELETE on entries are rejected', async () => {
    await expect(sql`update ledger_entries set reason = 'x'`.execute(tdb.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from ledger_entries`.execute(tdb.db)).rejects.toThrow(/append-only/);
  });

  it('balances that do not match the entries are reported', async () => {
    const org = await insertOrg(tdb.db);
    await credits.grant(tdb.db, { organizationId: org, amount: 5, idempotencyKey: 'g', actor: system });
    await sql`update credit_accounts set purchased_available = purchased_available + 1 where organization_id = ${org}`.execute(tdb.db);
    const report = await verifyLedger(tdb.db);
    expect(report.mismatches).toEqual([{ organization_id: org, field: 'purchased_available', stored: 6, computed: 5 }]);
    await sql`update credit_accounts set purchased_available = purchased_available - 1 where organization_id = ${org}`.execute(tdb.db);
    expect((await verifyLedger(tdb.db)).mismatches).toEqual([]);
  });
});

describe('low balance alerts', () => {
  it('crossing the threshold records one alert until the balance recovers', async () => {
    const org = await insertOrg(tdb.db);
    await credits.grant(tdb.db, { organizationId: org, amount: 20, idempotencyKey: 'g', actor: system });
    await credits.setLowBalanceThreshold(tdb.db, org, 10);
    const items = (p: string) => Array.from({ length: 4 }, (_, i) => ({ messageId: `${p}${i}`, amount: 2 }));
    await credits.reserve(tdb.db, { organizationId: org, items: items('a'), idempotencyKey: 'r1', actor: system }); // 12 left
    await credits.reserve(tdb.db, { organizationId: org, items: items('b'), idempotencyKey: 'r2', actor: system }); // 4 left: alert
    await credits.reserve(tdb.db, { organizationId: org, items: items('c').slice(0, 1), idempotencyKey: 'r3', actor: system }); // 2: no new alert
    let alerts = await credits.listAlerts(tdb.db, org, { limit: 10, before: undefined });
    expect(alerts.map((a) => [a.available, a.threshold])).toEqual([[4, 10]]);
    await credits.grant(tdb.db, { organizationId: org, amount: 50, idempotencyKey: 'g2', actor: system }); // recovers
    await credits.reserve(tdb.db, { organizationId: org, items: [{ messageId: 'big', amount: 45 }], idempotencyKey: 'r4', actor: system }); // 7: alert again
    alerts = await credits.listAlerts(tdb.db, org, { limit: 10, before: undefined });
    expect(alerts.map((a) => a.available)).toEqual([7, 4]);
  });
});
