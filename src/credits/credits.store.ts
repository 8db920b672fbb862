import { sql } from 'kysely';
import type { DbOrTx, Tx } from '../db/db.ts';
import { newId } from '../shared/ids.ts';
import type { Balances, Delta, EntryKind } from './credits.ts';

export interface AccountRow {
  organization_id: string;
  allowance_available: number;
  purchased_available: number;
  reserved_allowance: number;
  reserved_purchased: number;
  spent: number;
  debt: number;
  allowance_period: string | null;
  allowance_period_start: Date | null;
  low_balance_threshold: number | null;
  low_balance_alerted: boolean;
  updated_at: Date;
}

export function accountToBalances(row: AccountRow): Balances {
  return {
    allowance: row.allowance_available,
    purchased: row.purchased_available,
    reservedAllowance: row.reserved_allowance,
    reservedPurchased: row.reserved_purchased,
    spent: row.spent,
    debt: row.debt,
  };
}

/**
 * Lock the organization's account row for the rest of the transaction
 * (creating it on first use). Every ledger operation starts here, so all
 * operations of one organization are serialised by this one row lock.
 */
export async function lockAccount(trx: Tx, organizationId: string): Promise<AccountRow> {
  const select = () =>
    sql<AccountRow>`select * from credit_accounts where organization_id = ${organizationId} for update`.execute(trx);
  let { rows } = await select();
  if (rows[0] === undefined) {
    await sql`insert into credit_accounts (organization_id) values (${organizationId}) on conflict do nothing`.execute(trx);
    ({ rows } = await select());
  }
  if (rows[0] === undefined) throw new Error(`no credit account for ${organizationId}`);
  return rows[0];
}

/**
 * Lock the account, then read a prior operation with this key. Two
 * statements on purpose: a single `select … join … for update` would read the
 * joined operation from the snapshot taken *before* waiting for the lock, and
 * miss one committed by the transaction it waited for (a duplicate).
 */
export async function lockAccountForOperation(
  trx: Tx,
  organizationId: string,
  key: string,
): Promise<{ account: AccountRow; prior: OperationRow | undefined }> {
  const account = await lockAccount(trx, organizationId);
  const { rows } = await sql<OperationRow>`select kind, request_hash, result from ledger_operations
    where organization_id = ${organizationId} and idempotency_key = ${key}`.execute(trx);
  return { account, prior: rows[0] };
}

export async function findAccount(db: DbOrTx, organizationId: string): Promise<AccountRow | undefined> {
  const { rows } = await sql<AccountRow>`select * from credit_accounts where organization_id = ${organizationId}`.execute(db);
  return rows[0];
}

/**
 * Store the new balances and the operation's result in one statement (the
 * end of every ledger operation).
 */
export async function saveAccountAndOperation(
  trx: Tx,
  organizationId: string,
  b: Balances,
  extra: { allowancePeriod?: string | null; allowancePeriodStart?: Date | null; lowBalanceAlerted: boolean },
  operation: { key: string; kind: string; requestHash: string; result: unknown },
): Promise<void> {
  await sql`with saved as (
      update credit_accounts set
        allowance_available = ${b.allowance},
        purchased_available = ${b.purchased},
        reserved_allowance = ${b.reservedAllowance},
        reserved_purchased = ${b.reservedPurchased},
        spent = ${b.spent},
        debt = ${b.debt},
        allowance_period = ${extra.allowancePeriod === undefined ? sql`allowance_period` : extra.allowancePeriod},
        allowance_period_start = ${extra.allowancePeriodStart === undefined ? sql`allowance_period_start` : extra.allowancePeriodStart},
        low_balance_alerted = ${extra.lowBalanceAlerted},
        updated_at = now()
      where organization_id = ${organizationId}
    )
    insert into ledger_operations (organization_id, idempotency_key, kind, request_hash, result)
    values (${organizationId}, ${operation.key}, ${operation.kind}, ${operation.requestHash}, ${JSON.stringify(operation.result)}::json)`.execute(
    trx,
  );
}

export async function setLowBalanceThreshold(trx: Tx, organizationId: string, threshold: number | null): Promise<void> {
  await sql`update credit_accounts set low_balance_threshold = ${threshold}, low_balance_alerted = false
    where organization_id = ${organizationId}`.execute(trx);
}

export interface OperationRow {
  kind: string;
  request_hash: string;
  result: unknown;
}

export interface EntryInsert {
  kind: EntryKind;
  delta: Delta;
  reservationId?: string | null;
  messageId?: string | null;
  paymentRef?: string | null;
  reason?: string | null;
  idempotencyKey: string;
}

export interface ActorRef {
  type: 'api_key' | 'operator' | 'system';
  id: string | null;
}

export interface NewReservation {
  id: string;
  messageId: string;
  fromAllowance: number;
  fromPurchased: number;
}

function entryJson(entries: readonly EntryInsert[]): string {
  return JSON.stringify(
    entries.map((e) => {
      const d = e.delta;
      const row: Record<string, string | number> = { k: e.kind, i: e.idempotencyKey };
      if (d.allowance !== 0) row.a = d.allowance;
      if (d.purchased !== 0) row.p = d.purchased;
      if (d.reservedAllowance !== 0) row.ra = d.reservedAllowance;
      if (d.reservedPurchased !== 0) row.rp = d.reservedPurchased;
      if (d.spent !== 0) row.s = d.spent;
      if (d.debt !== 0) row.d = d.debt;
      if (e.reservationId) row.r = e.reservationId;
      if (e.messageId) row.m = e.messageId;
      if (e.paymentRef) row.y = e.paymentRef;
      if (e.reason) row.why = e.reason;
      return row;
    }),
  );
}

/**
 * Append entries (and the reservations they open) in one statement. Rows
 * travel as JSON parameters, cheaper to encode and parse than a dozen arrays;
 * zero deltas and nulls are left out and defaulted in SQL. One round trip per
 * batch keeps a hot account's throughput up.
 */
export async function insertEntries(
  trx: Tx,
  organizationId: string,
  actor: ActorRef,
  entries: readonly EntryInsert[],
  reservations: { rows: readonly NewReservation[]; allowancePeriod: string | null } = { rows: [], allowancePeriod: null },
): Promise<void> {
  if (entries.length === 0 && reservations.rows.length === 0) return;
  const insertReservations =
    reservations.rows.length === 0
      ? sql``
      : sql`with new_reservations as (
          insert into credit_reservations (id, organization_id, message_id, from_allowance, from_purchased, allowance_period, state)
          select x.id, ${organizationId}, x.m, x.a, x.p, ${reservations.allowancePeriod}::text, 'open'
          from json_to_recordset(${JSON.stringify(
            reservations.rows.map((r) => ({ id: r.id, m: r.messageId, a: r.fromAllowance, p: r.fromPurchased })),
          )}::json) as x(id text, m text, a bigint, p bigint)
        ) `;
  await sql`${insertReservations}insert into ledger_entries (organization_id, kind, allowance_delta, purchased_delta,
      reserved_allowance_delta, reserved_purchased_delta, spent_delta, debt_delta, reservation_id, message_id,
      payment_ref, actor_type, actor_id, reason, idempotency_key)
    select ${organizationId}, e.k, coalesce(e.a, 0), coalesce(e.p, 0), coalesce(e.ra, 0), coalesce(e.rp, 0),
      coalesce(e.s, 0), coalesce(e.d, 0), e.r, e.m, e.y, ${actor.type}, ${actor.id}, e.why, e.i
    from rows from (json_to_recordset(${entryJson(entries)}::json)
      as (k text, a bigint, p bigint, ra bigint, rp bigint, s bigint, d bigint, r text, m text, y text, why text, i text))
      with ordinality as e(k, a, p, ra, rp, s, d, r, m, y, why, i, ord)
    order by e.ord`.execute(trx);
}

export interface ReservationRow {
  id: string;
  organization_id: string;
  message_id: string;
  from_allowance: number;
  from_purchased: number;
  allowance_period: string | null;
  state: 'open' | 'captured' | 'released' | 'refunded';
  created_at: Date;
  settled_at: Date | null;
}

export async function openReservationsForMessages(
  trx: Tx,
  organizationId: string,
  messageIds: readonly string[],
): Promise<ReservationRow[]> {
  if (messageIds.length === 0) return [];
  const { rows } = await sql<ReservationRow>`select * from credit_reservations
    where organization_id = ${organizationId} and state = 'open' and message_id = any(${[...messageIds]}::text[])`.execute(trx);
  return rows;
}

export async function findReservations(
  db: DbOrTx,
  organizationId: string,
  ids: readonly string[],
): Promise<ReservationRow[]> {
  if (ids.length === 0) return [];
  const { rows } = await sql<ReservationRow>`select * from credit_reservations
    where organization_id = ${organizationId} and id = any(${[...ids]}::text[])`.execute(db);
  return rows;
}

export async function settleReservations(
  trx: Tx,
  ids: readonly string[],
  to: 'captured' | 'released' | 'refunded',
): Promise<void> {
  if (ids.length === 0) return;
  await sql`update credit_reservations set state = ${to}, settled_at = now() where id = any(${[...ids]}::text[])`.execute(
    trx,
  );
}

export async function insertAlert(trx: Tx, organizationId: string, availableNow: number, threshold: number): Promise<void> {
  await sql`insert into credit_alerts (id, organization_id, kind, available, threshold)
    values (${newId('alr')}, ${organizationId}, 'low_balance', ${availableNow}, ${threshold})`.execute(trx);
}

export async function spentSince(db: DbOrTx, organizationId: string, since: Date): Promise<number> {
  const { rows } = await sql<{ s: number }>`select coalesce(sum(spent_delta), 0)::bigint as s from ledger_entries
    where organization_id = ${organizationId} and created_at >= ${since}`.execute(db);
  return rows[0]?.s ?? 0;
}
