/**
 * Pure bucket arithmetic for the credit ledger. No I/O: the service feeds in
 * the locked account's balances and writes out the entries these functions
 * plan. Every plan is a list of entries whose deltas, summed onto the
 * balances, give the new balances, so "balances = sum of entries" holds by
 * construction.
 */

export interface Balances {
  allowance: number;
  purchased: number;
  reservedAllowance: number;
  reservedPurchased: number;
  spent: number;
  debt: number;
}

export type Delta = Balances;

export type EntryKind =
  | 'purchase'
  | 'grant'
  | 'allowance_renewal'
  | 'allowance_expiry'
  | 'reserve'
  | 'capture'
  | 'release'
  | 'refund'
  | 'adjust'
  | 'clawback'
  | 'debt_repayment';

export const ENTRY_KINDS: readonly EntryKind[] = [
  'purchase',
  'grant',
  'allowance_renewal',
  'allowance_expiry',
  'reserve',
  'capture',
  'release',
  'refund',
  'adjust',
  'clawback',
  'debt_repayment',
];

export interface PlannedEntry {
  kind: EntryKind;
  delta: Delta;
}

export const ZERO: Balances = Object.freeze({
  allowance: 0,
  purchased: 0,
  reservedAllowance: 0,
  reservedPurchased: 0,
  spent: 0,
  debt: 0,
});

export function delta(partial: Partial<Delta>): Delta {
  return { ...ZERO, ...partial };
}

export function apply(b: Balances, d: Delta): Balances {
  return {
    allowance: b.allowance + d.allowance,
    purchased: b.purchased + d.purchased,
    reservedAllowance: b.reservedAllowance + d.reservedAllowance,
    reservedPurchased: b.reservedPurchased + d.reservedPurchased,
    spent: b.spent + d.spent,
    debt: b.debt + d.debt,
  };
}

export function applyAll(b: Balances, entries: readonly PlannedEntry[]): Balances {
  return entries.reduce((acc, e) => apply(acc, e.delta), b);
}

export function available(b: Balances): number {
  return b.allowance + b.purchased;
}

export function reserved(b: Balances): number {
  return b.reservedAllowance + b.reservedPurchased;
}

/** Every stored balance is a non-negative integer (the CHECK constraints, restated). */
export function isValid(b: Balances): boolean {
  return Object.values(b).every((v) => Number.isSafeInteger(v) && v >= 0);
}

export function assertPositiveAmount(amount: number): void {
  if (!Number.isSafeInteger(amount) || amount <= 0) {
    throw new RangeError(`amount must be a positive integer, got ${amount}`);
  }
}

/**
 * Credits coming in (purchase, grant, positive adjust) land in the purchased
 * bucket, then repay any debt first: debt is paid before anything can be
 * spent again.
 */
export function planCredit(b: Balances, kind: 'purchase' | 'grant' | 'adjust', amount: number): PlannedEntry[] {
  assertPositiveAmount(amount);
  const entries: PlannedEntry[] = [{ kind, delta: delta({ purchased: amount }) }];
  const repay = Math.min(b.debt, amount);
  if (repay > 0) entries.push({ kind: 'debt_repayment', delta: delta({ purchased: -repay, debt: -repay }) });
  return entries;
}

/**
 * Credits taken back (negative adjust, clawback): from purchased first, then
 * allowance; what is not there becomes debt. Reserved credits are untouched
 * (they belong to messages already in flight), and no balance goes negative.
 * `allowance_first`: the allowance is taken before purchased credits (a
 * refunded subscription period takes back its own allowance first).
 */
export function planDebit(
  b: Balances,
  kind: 'adjust' | 'clawback',
  amount: number,
  order: 'purchased_first' | 'allowance_first' = 'purchased_first',
): PlannedEntry[] {
  assertPositiveAmount(amount);
  let fromPurchased: number;
  let fromAllowance: number;
  if (order === 'allowance_first') {
    fromAllowance = Math.min(b.allowance, amount);
    fromPurchased = Math.min(b.purchased, amount - fromAllowance);
  } else {
    fromPurchased = Math.min(b.purchased, amount);
    fromAllowance = Math.min(b.allowance, amount - fromPurchased);
  }
  const toDebt = amount - fromPurchased - fromAllowance;
  return [{ kind, delta: delta({ purchased: -fromPurchased, allowance: -fromAllowance, debt: toDebt }) }];
}

/** A renewal replaces the allowance: the unused rest expires, the new allowance arrives. */
export function planRenewal(b: Balances, amount: number): PlannedEntry[] {
  if (!Number.isSafeInteger(amount) || amount < 0) throw new RangeError(`allowance must be ≥ 0, got ${amount}`);
  const entries: PlannedEntry[] = [];
  if (b.allowance > 0) entries.push({ kind: 'allowance_expiry', delta: delta({ allowance: -b.allowance }) });
  if (amount > 0) entries.push({ kind: 'allowance_renewal', delta: delta({ allowance: amount }) });
  return entries;
}

export interface Split {
  fromAllowance: number;
  fromPurchased: number;
}

/** Allowance first, then purchased; undefined when it does not fit or debt is outstanding. */
export function splitReservation(b: Balances, amount: number): Split | undefined {
  assertPositiveAmount(amount);
  if (b.debt > 0 || available(b) < amount) return undefined;
  const fromAllowance = Math.min(b.allowance, amount);
  return { fromAllowance, fromPurchased: amount - fromAllowance };
}

export function reserveDelta(s: Split): Delta {
  return delta({
    allowance: -s.fromAllowance,
    purchased: -s.fromPurchased,
    reservedAllowance: s.fromAllowance,
    reservedPurchased: s.fromPurchased,
  });
}

export type UnfitReason = 'insufficient_credits' | 'debt_outstanding';

export interface ReservePlan {
  /** Splits for the longest prefix of `amounts` that fits, in order. */
  splits: Split[];
  /** Why the first item after the prefix did not fit (undefined if all fit). */
  unfitReason: UnfitReason | undefined;
  after: Balances;
}

/** Reserve the longest prefix of the batch that fits, in order; stop at the first that does not. */
export function planReserveBatch(b: Balances, amounts: readonly number[]): ReservePlan {
  let current = b;
  const splits: Split[] = [];
  for (const amount of amounts) {
    const split = splitReservation(current, amount);
    if (split === undefined) {
      return { splits, unfitReason: current.debt > 0 ? 'debt_outstanding' : 'insufficient_credits', after: current };
    }
    splits.push(split);
    current = apply(current, reserveDelta(split));
  }
  return { splits, unfitReason: undefined, after: current };
}

export function captureDelta(s: Split): Delta {
  return delta({
    reservedAllowance: -s.fromAllowance,
    reservedPurchased: -s.fromPurchased,
    spent: s.fromAllowance + s.fromPurchased,
  });
}

/**
 * Credits that came back (a release, a refund) repay outstanding debt first,
 * as credits coming in do: purchased, then allowance. Debt arises when a
 * clawback found the credits reserved (it never takes reserved credits);
 * when those reservations come back, they settle it. Without this an
 * account could hold spendable credits and debt at once, every reservation
 * refused for the debt, and the allowance expiring at renewal unspent.
 */
function repayFromReturned(debt: number, purchased: number, allowance: number): PlannedEntry[] {
  const fromPurchased = Math.min(debt, purchased);
  const fromAllowance = Math.min(debt - fromPurchased, allowance);
  if (fromPurchased + fromAllowance === 0) return [];
  return [{ kind: 'debt_repayment', delta: delta({ purchased: -fromPurchased, allowance: -fromAllowance, debt: -(fromPurchased + fromAllowance) }) }];
}

/**
 * A release returns credits to the bucket they came from. Allowance credits
 * from a period that has since been renewed expire instead of coming back.
 * With debt outstanding (`debt`, the account's before this release), what
 * came back repays it first.
 */
export function planRelease(s: Split, samePeriod: boolean, debt = 0): PlannedEntry[] {
  const entries: PlannedEntry[] = [
    {
      kind: 'release',
      delta: delta({
        reservedAllowance: -s.fromAllowance,
        reservedPurchased: -s.fromPurchased,
        allowance: s.fromAllowance,
        purchased: s.fromPurchased,
      }),
    },
  ];
  if (!samePeriod && s.fromAllowance > 0) {
    entries.push({ kind: 'allowance_expiry', delta: delta({ allowance: -s.fromAllowance }) });
  }
  entries.push(...repayFromReturned(debt, s.fromPurchased, samePeriod ? s.fromAllowance : 0));
  return entries;
}

/** A refund of a captured message gives its credits back, like a release of spent credits (and repays debt first). */
export function planRefund(s: Split, samePeriod: boolean, debt = 0): PlannedEntry[] {
  const entries: PlannedEntry[] = [
    {
      kind: 'refund',
      delta: delta({
        spent: -(s.fromAllowance + s.fromPurchased),
        allowance: s.fromAllowance,
        purchased: s.fromPurchased,
      }),
    },
  ];
  if (!samePeriod && s.fromAllowance > 0) {
    entries.push({ kind: 'allowance_expiry', delta: delta({ allowance: -s.fromAllowance }) });
  }
  entries.push(...repayFromReturned(debt, s.fromPurchased, samePeriod ? s.fromAllowance : 0));
  return entries;
}
