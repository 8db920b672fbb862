import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { insertOrg, type StoredAccount, storedAccount } from './helpers/orgs.ts';

/**
 * Model-based test: random sequences of every ledger operation run against
 * real PostgreSQL and against a small in-memory model written independently
 * of the production rules; after each step the stored balances must equal
 * the model's and `verify` must be clean.
 */
interface Res {
  id: string;
  a: number;
  p: number;
  period: string;
  state: 'open' | 'captured' | 'released' | 'refunded';
}
interface Model {
  b: StoredAccount;
  period: string;
  res: Res[];
  n: number;
}
interface Real {
  db: TestDatabase['db'];
  org: string;
}

let tdb: TestDatabase;
const actor = { type: 'system' as const, id: 'model' };
beforeAll(async () => {
  tdb = await createTestDatabase({ poolSize: 4 });
});
afterAll(async () => {
  await tdb.close();
});

async function check(m: Model, r: Real) {
  expect(await storedAccount(r.db, r.org)).toEqual(m.b);
  const report = await credits.verifyLedger(r.db);
  expect(report.mismatches.filter((x) => x.organization_id === r.org)).toEqual([]);
}

function creditIn(m: Model, amount: number) {
  m.b.purchased += amount;
  const repay = Math.min(m.b.debt, amount);
  m.b.purchased -= repay;
  m.b.debt -= repay;
}

function debitOut(m: Model, amount: number) {
  const p = Math.min(m.b.purchased, amount);
  const a = Math.min(m.b.allowance, amount - p);
  m.b.purchased -= p;
  m.b.allowance -= a;
  m.b.debt += amount - p - a;
}

type Cmd = fc.AsyncCommand<Model, Real>;
const key = (m: Model) => `k${m.n++}`;

class Purchase implements Cmd {
  constructor(readonly amount: number, readonly kind: 'purchase' | 'grant') {}
  check = () => true;
  async run(m: Model, r: Real) {
    const op = this.kind === 'purchase' ? credits.purchase : credits.grant;
    await op(r.db, { organizationId: r.org, amount: this.amount, idempotencyKey: key(m), actor, paymentRef: 'pay' });
    creditIn(m, this.amount);
    await check(m, r);
  }
  toString = () => `${this.kind}(${this.amount})`;
}

class Renew implements Cmd {
  constructor(readonly amount: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const period = `p${m.n}`;
    await credits.renewAllowance(r.db, { organizationId: r.org, amount: this.amount, period, periodStart: new Date(), idempotencyKey: key(m), actor });
    m.b.allowance = this.amount;
    m.period = period;
    await check(m, r);
  }
  toString = () => `renew(${this.amount})`;
}

class Reserve implements Cmd {
  constructor(readonly amounts: number[]) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const items = this.amounts.map((amount, i) => ({ messageId: `m${m.n}-${i}`, amount }));
    const result = await credits.reserve(r.db, { organizationId: r.org, items, idempotencyKey: key(m), actor });
    let fitted = 0;
    for (const amount of this.amounts) {
      if (m.b.debt > 0 || m.b.allowance + m.b.purchased < amount) break;
      const a = Math.min(m.b.allowance, amount);
      m.b.allowance -= a;
      m.b.purchased -= amount - a;
      m.b.reservedAllowance += a;
      m.b.reservedPurchased += amount - a;
      const got = result.reserved[fitted]!;
      expect([got.from_allowance, got.from_purchased]).toEqual([a, amount - a]);
      m.res.push({ id: got.reservation_id, a, p: amount - a, period: m.period, state: 'open' });
      fitted++;
    }
    expect(result.reserved.length).toBe(fitted);
    expect(result.not_reserved.length).toBe(this.amounts.length - fitted);
    await check(m, r);
  }
  toString = () => `reserve(${this.amounts.join(',')})`;
}

class Settle implements Cmd {
  constructor(readonly op: 'capture' | 'release' | 'refund', readonly pick: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    if (m.res.length === 0) return;
    const target = m.res[this.pick % m.res.length]!;
    const fn = credits[this.op];
    const result = await fn(r.db, { organizationId: r.org, reservationIds: [target.id], idempotencyKey: key(m), actor });
    const allowed = this.op === 'refund' ? target.state === 'captured' : target.state === 'open';
    expect(result.items[0]!.outcome === 'refused').toBe(!allowed);
    if (allowed) {
      const amount = target.a + target.p;
      if (this.op === 'capture') {
        m.b.reservedAllowance -= target.a;
        m.b.reservedPurchased -= target.p;
        m.b.spent += amount;
        target.state = 'captured';
      } else {
        if (this.op === 'release') {
          m.b.reservedAllowance -= target.a;
          m.b.reservedPurchased -= target.p;
          target.state = 'released';
        } else {
          m.b.spent -= amount;
          target.state = 'refunded';
        }
        const backA = target.period === m.period ? target.a : 0; // expired otherwise
        m.b.purchased += target.p;
        m.b.allowance += backA;
        // what came back repays debt first: purchased, then allowance
        const fromP = Math.min(m.b.debt, target.p);
        const fromA = Math.min(m.b.debt - fromP, backA);
        m.b.purchased -= fromP;
        m.b.allowance -= fromA;
        m.b.debt -= fromP + fromA;
      }
    }
    await check(m, r);
  }
  toString = () => `${this.op}(#${this.pick})`;
}

class Adjust implements Cmd {
  constructor(readonly amount: number, readonly kind: 'adjust' | 'clawback') {}
  check = () => true;
  async run(m: Model, r: Real) {
    if (this.kind === 'adjust') {
      await credits.adjust(r.db, { organizationId: r.org, amount: this.amount, reason: 'model', idempotencyKey: key(m), actor });
      if (this.amount > 0) creditIn(m, this.amount);
      else debitOut(m, -this.amount);
    } else {
      const amount = Math.abs(this.amount);
      await credits.clawback(r.db, { organizationId: r.org, amount, paymentRef: 'pay', reason: 'refund', idempotencyKey: key(m), actor });
      debitOut(m, amount);
    }
    await check(m, r);
  }
  toString = () => `${this.kind}(${this.amount})`;
}

const commands = [
  fc.tuple(fc.integer({ min: 1, max: 40 }), fc.constantFrom('purchase' as const, 'grant' as const)).map(([a, k]) => new Purchase(a, k)),
  fc.integer({ min: 0, max: 30 }).map((a) => new Renew(a)),
  fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 6 }).map((a) => new Reserve(a)),
  fc.tuple(fc.constantFrom('capture' as const, 'release' as const, 'refund' as const), fc.nat(50)).map(([o, p]) => new Settle(o, p)),
  fc.tuple(fc.integer({ min: -50, max: 50 }).filter((n) => n !== 0), fc.constantFrom('adjust' as const, 'clawback' as const)).map(
    ([a, k]) => new Adjust(a, k),
  ),
];

describe('ledger model', () => {
  it('real balances follow the model through random operation sequences', async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 25 }), async (cmds) => {
        const org = await insertOrg(tdb.db);
        const model: Model = {
          b: { allowance: 0, purchased: 0, reservedAllowance: 0, reservedPurchased: 0, spent: 0, debt: 0 },
          period: 'none',
          res: [],
          n: 0,
        };
        await fc.asyncModelRun(() => ({ model, real: { db: tdb.db, org } }), cmds);
      }),
      { numRuns: 100 },
    );
  }, 120_000);
});
