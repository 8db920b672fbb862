import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyAll,
  available,
  type Balances,
  isValid,
  planCredit,
  planDebit,
  planRefund,
  planRelease,
  planRenewal,
  planReserveBatch,
  reserveDelta,
  splitReservation,
  ZERO,
} from '../src/credits/credits.ts';

const b = (p: Partial<Balances>): Balances => ({ ...ZERO, ...p });

describe('bucket arithmetic', () => {
  it('reservations take allowance first, then purchased', () => {
    expect(splitReservation(b({ allowance: 3, purchased: 10 }), 5)).toEqual({ fromAllowance: 3, fromPurchased: 2 });
    expect(splitReservation(b({ allowance: 0, purchased: 10 }), 5)).toEqual({ fromAllowance: 0, fromPurchased: 5 });
    expect(splitReservation(b({ allowance: 9, purchased: 0 }), 5)).toEqual({ fromAllowance: 5, fromPurchased: 0 });
  });

  it('nothing fits when it would overdraw, or while debt is outstanding', () => {
    expect(splitReservation(b({ allowance: 2, purchased: 2 }), 5)).toBeUndefined();
    expect(splitReservation(b({ purchased: 100, debt: 1 }), 1)).toBeUndefined();
  });

  it('a batch reserves the longest prefix that fits, then stops', () => {
    const plan = planReserveBatch(b({ allowance: 2, purchased: 3 }), [2, 2, 2, 1]);
    expect(plan.splits).toEqual([
      { fromAllowance: 2, fromPurchased: 0 },
      { fromAllowance: 0, fromPurchased: 2 },
    ]);
    // the 1-credit item would fit, but it is after the first that does not: prefix only
    expect(plan.unfitReason).toBe('insufficient_credits');
    expect(plan.after).toEqual(b({ purchased: 1, reservedAllowance: 2, reservedPurchased: 2 }));
    expect(planReserveBatch(b({ purchased: 5, debt: 2 }), [1]).unfitReason).toBe('debt_outstanding');
  });

  it('credits in repay debt first', () => {
    const after = applyAll(b({ debt: 7 }), planCredit(b({ debt: 7 }), 'purchase', 10));
    expect(after).toEqual(b({ purchased: 3 }));
    const entries = planCredit(b({ debt: 7 }), 'purchase', 5);
    expect(entries.map((e) => e.kind)).toEqual(['purchase', 'debt_repayment']);
    expect(applyAll(b({ debt: 7 }), entries)).toEqual(b({ debt: 2 }));
  });

  it('debits take purchased, then allowance, then record debt: never negative', () => {
    const start = b({ allowance: 4, purchased: 3, reservedPurchased: 5 });
    expect(applyAll(start, planDebit(start, 'clawback', 5))).toEqual(b({ allowance: 2, reservedPurchased: 5 }));
    expect(applyAll(start, planDebit(start, 'adjust', 10))).toEqual(b({ reservedPurchased: 5, debt: 3 }));
  });

  it('a refunded subscription period takes its allowance first, then purchased, then records debt', () => {
    const start = b({ allowance: 4, purchased: 3, reservedAllowance: 2 });
    expect(applyAll(start, planDebit(start, 'clawback', 3, 'allowance_first'))).toEqual(b({ allowance: 1, purchased: 3, reservedAllowance: 2 }));
    expect(applyAll(start, planDebit(start, 'clawback', 6, 'allowance_first'))).toEqual(b({ purchased: 1, reservedAllowance: 2 }));
    expect(applyAll(start, planDebit(start, 'clawback', 9, 'allowance_first'))).toEqual(b({ reservedAllowance: 2, debt: 2 }));
  });

  it('a renewal expires the unused allowance and grants the new one', () => {
    const start = b({ allowance: 40, purchased: 5 });
    const entries = planRenewal(start, 100);
    expect(entries.map((e) => e.kind)).toEqual(['allowance_expiry', 'allowance_renewal']);
    expect(applyAll(start, entries)).toEqual(b({ allowance: 100, purchased: 5 }));
  });

  it('a release after a renewal expires the allowance part instead of bringing it back', () => {
    const split = { fromAllowance: 2, fromPurchased: 1 };
    const start = b({ allowance: 50, reservedAllowance: 2, reservedPurchased: 1 });
    expect(applyAll(start, planRelease(split, true))).toEqual(b({ allowance: 52, purchased: 1 }));
    expect(applyAll(start, planRelease(split, false))).toEqual(b({ allowance: 50, purchased: 1 }));
    const spent = b({ allowance: 50, spent: 3 });
    expect(applyAll(spent, planRefund(split, false))).toEqual(b({ allowance: 50, purchased: 1 }));
  });

  it('credits that come back (release, refund) repay debt first: purchased, then allowance of the same period', () => {
    // a refunded period's clawback found its 100 allowance reserved: debt 100; the reservation then comes back
    const whole = { fromAllowance: 100, fromPurchased: 0 };
    expect(applyAll(b({ reservedAllowance: 100, debt: 100 }), planRelease(whole, true, 100))).toEqual(ZERO);
    const mixed = { fromAllowance: 4, fromPurchased: 3 };
    expect(applyAll(b({ reservedAllowance: 4, reservedPurchased: 3, debt: 5 }), planRelease(mixed, true, 5))).toEqual(b({ allowance: 2 }));
    expect(applyAll(b({ reservedAllowance: 4, reservedPurchased: 3, debt: 2 }), planRelease(mixed, true, 2))).toEqual(b({ allowance: 4, purchased: 1 }));
    // allowance of a renewed period expires; it repays nothing
    expect(applyAll(b({ reservedAllowance: 4, reservedPurchased: 3, debt: 5 }), planRelease(mixed, false, 5))).toEqual(b({ debt: 2 }));
    expect(applyAll(b({ spent: 7, debt: 9 }), planRefund(mixed, true, 9))).toEqual(b({ debt: 2 }));
    expect(planRelease(mixed, true, 5).map((e) => e.kind)).toEqual(['release', 'debt_repayment']);
    expect(planRelease(mixed, true, 0).map((e) => e.kind)).toEqual(['release']);
  });

  it('property: any sequence of planned operations keeps every balance ≥ 0 and conserves credits', () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant('credit' as const), n: fc.integer({ min: 1, max: 50 }) }),
      fc.record({ t: fc.constant('debit' as const), n: fc.integer({ min: 1, max: 80 }), allowanceFirst: fc.boolean() }),
      fc.record({ t: fc.constant('renew' as const), n: fc.integer({ min: 0, max: 60 }) }),
      fc.record({ t: fc.constant('reserve' as const), ns: fc.array(fc.integer({ min: 1, max: 9 }), { maxLength: 8 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        let cur = ZERO;
        let inflow = 0; // credited + renewed
        let outflow = 0; // debited from available + expired
        for (const o of ops) {
          const before = cur;
          switch (o.t) {
            case 'credit':
              cur = applyAll(cur, planCredit(cur, 'grant', o.n));
              inflow += o.n;
              break;
            case 'debit': {
              cur = applyAll(cur, planDebit(cur, 'clawback', o.n, o.allowanceFirst ? 'allowance_first' : 'purchased_first'));
              outflow += o.n; // what was not available became debt
              break;
            }
            case 'renew':
              outflow += cur.allowance;
              cur = applyAll(cur, planRenewal(cur, o.n));
              inflow += o.n;
              break;
            case 'reserve': {
              const plan = planReserveBatch(cur, o.ns);
              const sum = plan.splits.reduce((s, x) => s + x.fromAllowance + x.fromPurchased, 0);
              expect(sum).toBeLessThanOrEqual(available(before));
              // outstanding debt blocks every new reservation
              if (before.debt > 0) expect(plan.splits).toEqual([]);
              cur = plan.splits.reduce((acc, s) => applyAll(acc, [{ kind: 'reserve', delta: reserveDelta(s) }]), cur);
              break;
            }
          }
          expect(isValid(cur)).toBe(true);
        }
        // available + reserved - debt = everything that came in - everything that went out
        expect(available(cur) + cur.reservedAllowance + cur.reservedPurchased - cur.debt).toBe(inflow - outflow);
      }),
      { numRuns: 300 },
    );
  });
});
