import { createHash } from 'node:crypto';
import type { DbOrTx, Tx } from '../db/db.ts';
import { DomainError, validationError } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import {
  applyAll,
  available,
  type Balances,
  captureDelta,
  isValid,
  type PlannedEntry,
  planCredit,
  planDebit,
  planRefund,
  planRelease,
  planRenewal,
  planReserveBatch,
  reserveDelta,
  type UnfitReason,
} from './credits.ts';
import * as store from './credits.store.ts';

/**
 * The ledger service: every operation locks the organization's account row,
 * checks its idempotency key, plans entries with the pure rules, and writes
 * entries + balances + the operation's result in one transaction. Callers
 * that already hold a transaction (dispatch) pass it in; otherwise one is
 * opened here.
 */
export type LedgerActor = store.ActorRef;

export interface BalancesView {
  allowance: number;
  purchased: number;
  available: number;
  reserved: number;
  debt: number;
}

function view(b: Balances): BalancesView {
  return {
    allowance: b.allowance,
    purchased: b.purchased,
    available: available(b),
    reserved: b.reservedAllowance + b.reservedPurchased,
    debt: b.debt,
  };
}

interface OperationSpec {
  organizationId: string;
  idempotencyKey: string;
  kind: string;
  /** What makes two requests "the same": hashed, compared on replay. */
  request: unknown;
  actor: LedgerActor;
}

interface Planned<R> {
  entries: store.EntryInsert[];
  /** Reservations the entries open, written in the same statement. */
  reservations?: store.NewReservation[];
  result: (after: Balances) => R;
  allowancePeriod?: { id: string | null; start: Date | null };
}

export type Replayable<R> = R & { replayed: boolean };

function requestHash(kind: string, request: unknown): string {
  return createHash('sha256').update(JSON.stringify([kind, request])).digest('hex');
}

export async function inTransaction<T>(db: DbOrTx, fn: (trx: Tx) => Promise<T>): Promise<T> {
  return db.isTransaction ? fn(db as Tx) : db.transaction().execute(fn);
}

function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length < 1 || key.length > 255) {
    throw validationError('idempotency_key', 'must be 1 to 255 characters');
  }
}

async function runOperation<R>(
  db: DbOrTx,
  spec: OperationSpec,
  plan: (trx: Tx, account: store.AccountRow, balances: Balances) => Promise<Planned<R>>,
): Promise<Replayable<R>> {
  checkKey(spec.idempotencyKey);
  const hash = requestHash(spec.kind, spec.request);
  return inTransaction(db, async (trx) => {
    const { account, prior } = await store.lockAccountForOperation(trx, spec.organizationId, spec.idempotencyKey);
    if (prior !== undefined) {
      if (prior.kind !== spec.kind || prior.request_hash !== hash) {
        throw new DomainError(
          'idempotency_conflict',
          `Idempotency key "${spec.idempotencyKey}" was already used for a different ${prior.kind} request.`,
        );
      }
      return { ...(prior.result as R), replayed: true };
    }
    const before = store.accountToBalances(account);
    const planned = await plan(trx, account, before);
    const after = applyAll(before, planned.entries);
    // Past 2^53 − 1 a balance is no longer an exact integer here: the request's amount is at fault.
    if (Object.values(after).some((v) => v > Number.MAX_SAFE_INTEGER)) {
      throw validationError('amount', `would take a balance past ${Number.MAX_SAFE_INTEGER} credits`);
    }
    // The CHECK constraints would refuse this too; failing here names the bug.
    if (!isValid(after)) throw new Error(`ledger bug: ${spec.kind} would leave ${JSON.stringify(after)}`);

    await store.insertEntries(trx, spec.organizationId, spec.actor, planned.entries, {
      rows: planned.reservations ?? [],
      allowancePeriod: account.allowance_period,
    });
    let lowBalanceAlerted = account.low_balance_alerted;
    const threshold = account.low_balance_threshold;
    if (threshold !== null) {
      const now = available(after);
      if (now < threshold && !lowBalanceAlerted) {
        await store.insertAlert(trx, spec.organizationId, now, threshold);
        lowBalanceAlerted = true;
      } else if (now >= threshold && lowBalanceAlerted) {
        lowBalanceAlerted = false;
      }
    }
    const result = planned.result(after);
    await store.saveAccountAndOperation(
      trx,
      spec.organizationId,
      after,
      {
        lowBalanceAlerted,
        ...(planned.allowancePeriod !== undefined && {
          allowancePeriod: planned.allowancePeriod.id,
          allowancePeriodStart: planned.allowancePeriod.start,
        }),
      },
      { key: spec.idempotencyKey, kind: spec.kind, requestHash: hash, result },
    );
    return { ...result, replayed: false };
  });
}

/** Entry keys derive from the operation key, so each entry is unique per organization. */
function keyed(
  opKey: string,
  planned: readonly PlannedEntry[],
  extra: Omit<store.EntryInsert, 'kind' | 'delta' | 'idempotencyKey'> = {},
  suffix = '',
): store.EntryInsert[] {
  return planned.map((p, i) => ({
    ...extra,
    kind: p.kind,
    delta: p.delta,
    idempotencyKey: `${opKey}${suffix}${i === 0 ? '' : `#${i + 1}`}`,
  }));
}

function positive(field: string, amount: number): void {
  if (!Number.isSafeInteger(amount) || amount <= 0) throw validationError(field, 'must be a positive integer');
}

// ─── credits in ──────────────────────────────────────────────────────────────

export interface CreditResult {
  credited: number;
  debt_repaid: number;
  balances: BalancesView;
}

function creditOp(kind: 'purchase' | 'grant') {
  return (
    db: DbOrTx,
    input: {
      organizationId: string;
      amount: number;
      idempotencyKey: string;
      actor: LedgerActor;
      paymentRef?: string;
      reason?: string;
    },
  ): Promise<Replayable<CreditResult>> => {
    positive('amount', input.amount);
    return runOperation(
      db,
      {
        organizationId: input.organizationId,
        idempotencyKey: input.idempotencyKey,
        kind,
        request: { amount: input.amount, paymentRef: input.paymentRef ?? null },
        actor: input.actor,
      },
      async (_trx, _acc, b) => {
        const planned = planCredit(b, kind, input.amount);
        return {
          entries: keyed(input.idempotencyKey, planned, {
            paymentRef: input.paymentRef ?? null,
            reason: input.reason ?? null,
          }),
          result: (after) => ({
            credited: input.amount,
            debt_repaid: b.debt - after.debt,
            balances: view(after),
          }),
        };
      },
    );
  };
}

export const purchase = creditOp('purchase');
export const grant = creditOp('grant');

export interface RenewalResult {
  expired: number;
  granted: number;
  period: string;
  /** `onlyIfLatest` and the account already holds a later period: nothing changed. */
  superseded?: boolean;
  balances: BalancesView;
}

export function renewAllowance(
  db: DbOrTx,
  input: {
    organizationId: string;
    amount: number;
    period: string;
    periodStart: Date;
    idempotencyKey: string;
    actor: LedgerActor;
    /**
     * Renew only if no later period has renewed the account: decided under
     * the account's lock, so an older invoice handled while a newer one's
     * renewal commits cannot replace the newer allowance.
     */
    onlyIfLatest?: boolean;
  },
): Promise<Replayable<RenewalResult>> {
  if (!Number.isSafeInteger(input.amount) || input.amount < 0) throw validationError('amount', 'must be an integer ≥ 0');
  return runOperation(
    db,
    {
      organizationId: input.organizationId,
      idempotencyKey: input.idempotencyKey,
      kind: 'allowance_renewal',
      request: { amount: input.amount, period: input.period },
      actor: input.actor,
    },
    async (_trx, acc, b) => {
      const later = acc.allowance_period_start !== null && acc.allowance_period_start.getTime() > input.periodStart.getTime();
      if (input.onlyIfLatest === true && later) {
        return { entries: [], result: (after) => ({ expired: 0, granted: 0, period: input.period, superseded: true, balances: view(after) }) };
      }
      return {
        entries: keyed(input.idempotencyKey, planRenewal(b, input.amount), { reason: `allowance period ${input.period}` }),
        allowancePeriod: { id: input.period, start: input.periodStart },
        result: (after) => ({ expired: b.allowance, granted: input.amount, period: input.period, balances: view(after) }),
      };
    },
  );
}

// ─── credits out (operator and payments) ────────────────────────────────────

export interface AdjustResult {
  amount: number;
  taken_from_available: number;
  added_to_debt: number;
  debt_repaid: number;
  balances: BalancesView;
}

function debitResult(b: Balances, after: Balances, amount: number): AdjustResult {
  return {
    amount,
    taken_from_available: Math.max(0, available(b) - available(after)),
    added_to_debt: Math.max(0, after.debt - b.debt),
    debt_repaid: Math.max(0, b.debt - after.debt),
    balances: view(after),
  };
}

/** Operator correction, signed. Negative takes available to zero at most and records the rest as debt. */
export function adjust(
  db: DbOrTx,
  input: { organizationId: string; amount: number; reason: string; idempotencyKey: string; actor: LedgerActor; messageId?: string },
): Promise<Replayable<AdjustResult>> {
  if (!Number.isSafeInteger(input.amount) || input.amount === 0) throw validationError('amount', 'must be a non-zero integer');
  if (input.reason.trim() === '') throw validationError('reason', 'is required for an adjustment');
  return runOperation(
    db,
    {
      organizationId: input.organizationId,
      idempotencyKey: input.idempotencyKey,
      kind: 'adjust',
      request: { amount: input.amount, reason: input.reason, messageId: input.messageId ?? null },
      actor: input.actor,
    },
    async (_trx, _acc, b) => {
      const planned = input.amount > 0 ? planCredit(b, 'adjust', input.amount) : planDebit(b, 'adjust', -input.amount);
      return {
        entries: keyed(input.idempotencyKey, planned, { reason: input.reason, messageId: input.messageId ?? null }),
        result: (after) => debitResult(b, after, input.amount),
      };
    },
  );
}

/**
 * A payment refunded or disputed: its credits are taken back, into debt if
 * already spent. With `allowancePeriod` (a subscription invoice's period),
 * and while that period is still the account's, the allowance goes first.
 */
export function clawback(
  db: DbOrTx,
  input: {
    organizationId: string;
    amount: number;
    paymentRef: string;
    reason: string;
    idempotencyKey: string;
    actor: LedgerActor;
    allowancePeriod?: string;
  },
): Promise<Replayable<AdjustResult>> {
  positive('amount', input.amount);
  return runOperation(
    db,
    {
      organizationId: input.organizationId,
      idempotencyKey: input.idempotencyKey,
      kind: 'clawback',
      request: { amount: input.amount, paymentRef: input.paymentRef, ...(input.allowancePeriod !== undefined && { allowancePeriod: input.allowancePeriod }) },
      actor: input.actor,
    },
    async (_trx, acc, b) => {
      const ownPeriod = input.allowancePeriod !== undefined && acc.allowance_period === input.allowancePeriod;
      return {
        entries: keyed(input.idempotencyKey, planDebit(b, 'clawback', input.amount, ownPeriod ? 'allowance_first' : 'purchased_first'), {
          paymentRef: input.paymentRef,
          reason: input.reason,
        }),
        result: (after) => debitResult(b, after, -input.amount),
      };
    },
  );
}

// ─── two-phase spending ──────────────────────────────────────────────────────

export interface ReserveItem {
  messageId: string;
  amount: number;
}

export interface ReservedItem {
  message_id: string;
  reservation_id: string;
  amount: number;
  from_allowance: number;
  from_purchased: number;
  /** True when the message already held an open reservation (nothing new written). */
  existing: boolean;
}

export interface ReserveResult {
  reserved: ReservedItem[];
  not_reserved: { message_id: string; amount: number; reason: UnfitReason }[];
  balances: BalancesView;
}

/**
 * Reserve an ordered batch under one lock of the account row: the longest
 * prefix that fits is reserved, everything from the first item that does not
 * fit is reported back (so a campaign sends exactly what is paid for).
 */
export function reserve(
  db: DbOrTx,
  input: { organizationId: string; items: readonly ReserveItem[]; idempotencyKey: string; actor: LedgerActor },
): Promise<Replayable<ReserveResult>> {
  input.items.forEach((item, i) => positive(`items.${i}.amount`, item.amount));
  return runOperation(
    db,
    {
      organizationId: input.organizationId,
      idempotencyKey: input.idempotencyKey,
      kind: 'reserve',
      request: input.items.map((i) => [i.messageId, i.amount]),
      actor: input.actor,
    },
    async (trx, account, b) => {
      const open = await store.openReservationsForMessages(
        trx,
        input.organizationId,
        input.items.map((i) => i.messageId),
      );
      const openBy = new Map(open.map((r) => [r.message_id, r]));
      const fresh: ReserveItem[] = [];
      const seen = new Set<string>();
      const existing: ReservedItem[] = [];
      for (const item of input.items) {
        const held = openBy.get(item.messageId);
        if (held !== undefined) {
          if (!seen.has(item.messageId)) {
            existing.push({
              message_id: item.messageId,
              reservation_id: held.id,
              amount: held.from_allowance + held.from_purchased,
              from_allowance: held.from_allowance,
              from_purchased: held.from_purchased,
              existing: true,
            });
          }
        } else if (!seen.has(item.messageId)) {
          fresh.push(item);
        }
        seen.add(item.messageId);
      }
      const plan = planReserveBatch(
        b,
        fresh.map((i) => i.amount),
      );
      const made = plan.splits.map((split, i) => ({
        id: newId('rsv'),
        messageId: fresh[i]!.messageId,
        fromAllowance: split.fromAllowance,
        fromPurchased: split.fromPurchased,
      }));
      const entries: store.EntryInsert[] = made.map((r, i) => ({
        kind: 'reserve',
        delta: reserveDelta(r),
        reservationId: r.id,
        messageId: r.messageId,
        idempotencyKey: `${input.idempotencyKey}:${i}`,
      }));
      const notReserved = fresh.slice(made.length).map((i) => ({
        message_id: i.messageId,
        amount: i.amount,
        reason: plan.unfitReason ?? ('insufficient_credits' as const),
      }));
      return {
        entries,
        reservations: made,
        result: (after) => ({
          reserved: [
            ...existing,
            ...made.map((r) => ({
              message_id: r.messageId,
              reservation_id: r.id,
              amount: r.fromAllowance + r.fromPurchased,
              from_allowance: r.fromAllowance,
              from_purchased: r.fromPurchased,
              existing: false,
            })),
          ],
          not_reserved: notReserved,
          balances: view(after),
        }),
      };
    },
  );
}

export type SettleOutcome = 'captured' | 'released' | 'refunded' | 'refused';
export type RefusalReason = 'not_found' | 'already_captured' | 'already_released' | 'already_refunded' | 'not_captured';

export interface SettleResult {
  items: { reservation_id: string; message_id: string | null; amount: number; outcome: SettleOutcome; reason?: RefusalReason }[];
  balances: BalancesView;
}

function refusalFor(state: store.ReservationRow['state']): RefusalReason {
  switch (state) {
    case 'captured':
      return 'already_captured';
    case 'released':
      return 'already_released';
    case 'refunded':
      return 'already_refunded';
    case 'open':
      return 'not_captured';
    default: {
      const never: never = state;
      throw new Error(`unknown reservation state ${String(never)}`);
    }
  }
}

function settleOp(kind: 'capture' | 'release' | 'refund') {
  const to = ({ capture: 'captured', release: 'released', refund: 'refunded' } as const)[kind];
  const from = kind === 'refund' ? 'captured' : 'open';
  return (
    db: DbOrTx,
    input: {
      organizationId: string;
      reservationIds: readonly string[];
      idempotencyKey: string;
      actor: LedgerActor;
      reason?: string;
    },
  ): Promise<Replayable<SettleResult>> =>
    runOperation(
      db,
      {
        organizationId: input.organizationId,
        idempotencyKey: input.idempotencyKey,
        kind,
        request: [...input.reservationIds],
        actor: input.actor,
      },
      async (trx, account, b) => {
        // the balances as this operation's entries so far leave them: debt repaid by one release is not repaid again
        let current = b;
        const rows = await store.findReservations(trx, input.organizationId, input.reservationIds);
        const byId = new Map(rows.map((r) => [r.id, r]));
        const entries: store.EntryInsert[] = [];
        const settled: string[] = [];
        const settledSet = new Set<string>();
        const items: SettleResult['items'] = [];
        for (const id of input.reservationIds) {
          const row = byId.get(id);
          if (row === undefined) {
            items.push({ reservation_id: id, message_id: null, amount: 0, outcome: 'refused', reason: 'not_found' });
            continue;
          }
          const amount = row.from_allowance + row.from_purchased;
          if (row.state !== from || settledSet.has(id)) {
            const reason = settledSet.has(id) ? refusalFor(to) : refusalFor(row.state);
            items.push({ reservation_id: id, message_id: row.message_id, amount, outcome: 'refused', reason });
            continue;
          }
          const split = { fromAllowance: row.from_allowance, fromPurchased: row.from_purchased };
          const samePeriod = row.allowance_period === account.allowance_period;
          const planned: PlannedEntry[] =
            kind === 'capture'
              ? [{ kind: 'capture', delta: captureDelta(split) }]
              : kind === 'release'
                ? planRelease(split, samePeriod, current.debt)
                : planRefund(split, samePeriod, current.debt);
          current = applyAll(current, planned);
          entries.push(
            ...keyed(
              input.idempotencyKey,
              planned,
              { reservationId: id, messageId: row.message_id, reason: input.reason ?? null },
              `:${id}`,
            ),
          );
          settled.push(id);
          settledSet.add(id);
          items.push({ reservation_id: id, message_id: row.message_id, amount, outcome: to });
        }
        await store.settleReservations(trx, settled, to);
        return { entries, result: (after) => ({ items, balances: view(after) }) };
      },
    );
}

/** The carrier accepted: reserved credits become spent. */
export const capture = settleOp('capture');
/** The message provably did not reach the carrier: credits go back to their bucket. */
export const release = settleOp('release');
/** A captured message was reported undelivered and policy refunds it. */
export const refund = settleOp('refund');
