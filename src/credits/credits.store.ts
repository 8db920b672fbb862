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

export async function findAccount(db: DbOrTx, organizationId: string): Promise<AccountRow | undefined> {
  const { rows } = await sql<AccountRow>`select * from credit_accounts where organization_id = ${organizationId}`.execute(db);
  return rows[0];
}

export async function saveAccount(
  trx: Tx,
  organizationId: string,
  b: Balances,
  extra: { allowancePeriod?: string | null; allowancePeriodStart?: Date | null; lowBalanceAlerted?: boolean } = {},
): Promise<void> {
  await sql`update credit_accounts set
      allowance_available = ${b.allowance},
      purchased_available = ${b.purchased},
      reserved_allowance = ${b.reservedAllowance},
      reserved_purchased = ${b.reservedPurchased},
      spent = ${b.spent},
      debt = ${b.debt},
      allowance_period = ${extra.allowancePeriod === undefined ? sql`allowance_period` : extra.allowancePeriod},
      allowance_period_start = ${extra.allowancePeriodStart === undefined ? sql`allowance_period_start` : extra.allowancePeriodStart},
      low_balance_alerted = ${extra.lowBalanceAlerted === undefined ? sql`low_balance_alerted` : extra.lowBalanceAlerted},
      updated_at = now()
    where organization_id = ${organizationId}`.execute(trx);
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

export async function findOperation(trx: Tx, organizationId: string, key: string): Promise<OperationRow | undefined> {
  const { rows } = await sql<OperationRow>`select kind, request_hash, result from ledger_operations
    where organization_id = ${organizationId} and idempotency_key = ${key}`.execute(trx);
  return rows[0];
}

export async function insertOperation(
  trx: Tx,
  organizationId: string,
  key: string,
  kind: string,
  requestHash: string,
  result: unknown,
): Promise<void> {
  await sql`insert into ledger_operations (organization_id, idempotency_key, kind, request_hash, result)
    values (${organizationId}, ${key}, ${kind}, ${requestHash}, ${JSON.stringify(result)}::jsonb)`.execute(trx);
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

/** Append entries in one statement (unnest of arrays), in order. */
export async function insertEntries(
  trx: Tx,
  organizationId: string,
  actor: ActorRef,
  entries: readonly EntryInsert[],
): Promise<string[]> {
  if (entries.length === 0) return [];
  const ids = entries.map(() => newId('le'));
  const col = <T>(f: (e: EntryInsert) => T) => entries.map(f);
  await sql`insert into ledger_entries (id, organization_id, kind, allowance_delta, purchased_delta,
      reserved_allowance_delta, reserved_purchased_delta, spent_delta, debt_delta, reservation_id, message_id,
      payment_ref, actor_type, actor_id, reason, idempotency_key)
    select e.id, ${organizationId}, e.kind, e.a, e.p, e.ra, e.rp, e.s, e.d, e.rsv, e.msg, e.pay,
      ${actor.type}, ${actor.id}, e.reason, e.key
    from unnest(${ids}::text[], ${col((e) => e.kind)}::text[],
      ${col((e) => e.delta.allowance)}::bigint[], ${col((e) => e.delta.purchased)}::bigint[],
      ${col((e) => e.delta.reservedAllowance)}::bigint[], ${col((e) => e.delta.reservedPurchased)}::bigint[],
      ${col((e) => e.delta.spent)}::bigint[], ${col((e) => e.delta.debt)}::bigint[],
      ${col((e) => e.reservationId ?? null)}::text[], ${col((e) => e.messageId ?? null)}::text[],
      ${col((e) => e.paymentRef ?? null)}::text[], ${col((e) => e.reason ?? null)}::text[],
      ${col((e) => e.idempotencyKey)}::text[])
      with ordinality as e(id, kind, a, p, ra, rp, s, d, rsv, msg, pay, reason, key, ord)
    order by e.ord`.execute(trx);
  return ids;
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

export async function insertReservations(
  trx: Tx,
  organizationId: string,
  rows: readonly { id: string; messageId: string; fromAllowance: number; fromPurchased: number }[],
  allowancePeriod: string | null,
): Promise<void> {
  if (rows.length === 0) return;
  await sql`insert into credit_reservations (id, organization_id, message_id, from_allowance, from_purchased, allowance_period, state)
    select r.id, ${organizationId}, r.msg, r.a, r.p, ${allowancePeriod}, 'open'
    from unnest(${rows.map((r) => r.id)}::text[], ${rows.map((r) => r.messageId)}::text[],
      ${rows.map((r) => r.fromAllowance)}::bigint[], ${rows.map((r) => r.fromPurchased)}::bigint[]) as r(id, msg, a, p)`.execute(
    trx,
  );
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
