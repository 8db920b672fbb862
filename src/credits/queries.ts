import { sql } from 'kysely';
import type { DbOrTx, Tx } from '../db/db.ts';
import { validationError } from '../shared/errors.ts';
import type { PageRequest } from '../shared/pagination.ts';
import type { EntryKind } from './credits.ts';
import * as store from './credits.store.ts';

/** Read side of the ledger, for the API. */
export interface CreditsView {
  organization_id: string;
  available: number;
  reserved: number;
  debt: number;
  allowance: { available: number; reserved: number; period: string | null; period_start: string | null };
  purchased: { available: number; reserved: number };
  spent_this_period: number;
  spent_total: number;
  low_balance_threshold: number | null;
  low_balance: boolean;
}

function monthStart(now: Date): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

export async function getCredits(db: DbOrTx, organizationId: string, now: Date = new Date()): Promise<CreditsView> {
  const acc = await store.findAccount(db, organizationId);
  const periodStart = acc?.allowance_period_start ?? monthStart(now);
  const spent = acc === undefined ? 0 : await store.spentSince(db, organizationId, periodStart);
  const a = acc ?? {
    allowance_available: 0,
    purchased_available: 0,
    reserved_allowance: 0,
    reserved_purchased: 0,
    spent: 0,
    debt: 0,
    allowance_period: null,
    allowance_period_start: null,
    low_balance_threshold: null,
    low_balance_alerted: false,
  };
  const availableNow = a.allowance_available + a.purchased_available;
  return {
    organization_id: organizationId,
    available: availableNow,
    reserved: a.reserved_allowance + a.reserved_purchased,
    debt: a.debt,
    allowance: {
      available: a.allowance_available,
      reserved: a.reserved_allowance,
      period: a.allowance_period,
      period_start: a.allowance_period_start?.toISOString() ?? null,
    },
    purchased: { available: a.purchased_available, reserved: a.reserved_purchased },
    spent_this_period: spent,
    spent_total: a.spent,
    low_balance_threshold: a.low_balance_threshold,
    low_balance: a.low_balance_threshold !== null && availableNow < a.low_balance_threshold,
  };
}

export async function setLowBalanceThreshold(db: DbOrTx, organizationId: string, threshold: number | null): Promise<void> {
  if (threshold !== null && (!Number.isSafeInteger(threshold) || threshold < 0)) {
    throw validationError('low_balance_threshold', 'must be an integer ≥ 0 or null');
  }
  const run = async (trx: Tx) => {
    await store.lockAccount(trx, organizationId);
    await store.setLowBalanceThreshold(trx, organizationId, threshold);
  };
  await (db.isTransaction ? run(db as Tx) : db.transaction().execute(run));
}

export interface LedgerEntryView {
  id: string;
  seq: number;
  kind: EntryKind;
  allowance_delta: number;
  purchased_delta: number;
  reserved_allowance_delta: number;
  reserved_purchased_delta: number;
  spent_delta: number;
  debt_delta: number;
  reservation_id: string | null;
  message_id: string | null;
  payment_ref: string | null;
  actor_type: string;
  actor_id: string | null;
  reason: string | null;
  idempotency_key: string;
  created_at: string;
}

interface EntryRow extends Omit<LedgerEntryView, 'created_at' | 'id'> {
  created_at: Date;
}

export function entryRowToView(row: EntryRow): LedgerEntryView {
  return { id: `le_${row.seq}`, ...row, created_at: row.created_at.toISOString() };
}

export interface LedgerFilter {
  kinds?: EntryKind[];
  from?: Date;
  to?: Date;
}

/** Newest first, keyed by `seq` (the order entries were written). */
export async function listEntries(
  db: DbOrTx,
  organizationId: string,
  filter: LedgerFilter,
  page: PageRequest,
): Promise<EntryRow[]> {
  const before = page.before === undefined ? null : Number(page.before);
  if (before !== null && !Number.isSafeInteger(before)) throw validationError('cursor', 'is not a ledger cursor');
  const { rows } = await sql<EntryRow>`
    select seq, kind, allowance_delta, purchased_delta, reserved_allowance_delta, reserved_purchased_delta,
      spent_delta, debt_delta, reservation_id, message_id, payment_ref, actor_type, actor_id, reason,
      idempotency_key, created_at
    from ledger_entries
    where organization_id = ${organizationId}
      ${before === null ? sql`` : sql`and seq < ${before}`}
      ${filter.kinds && filter.kinds.length > 0 ? sql`and kind = any(${filter.kinds}::text[])` : sql``}
      ${filter.from ? sql`and created_at >= ${filter.from}` : sql``}
      ${filter.to ? sql`and created_at < ${filter.to}` : sql``}
    order by seq desc
    limit ${page.limit + 1}`.execute(db);
  return rows;
}

export interface AlertView {
  id: string;
  kind: 'low_balance';
  available: number;
  threshold: number;
  created_at: string;
}

export async function listAlerts(db: DbOrTx, organizationId: string, page: PageRequest): Promise<AlertView[]> {
  const { rows } = await sql<Omit<AlertView, 'created_at'> & { created_at: Date }>`
    select id, kind, available, threshold, created_at from credit_alerts
    where organization_id = ${organizationId} ${page.before === undefined ? sql`` : sql`and id < ${page.before}`}
    order by id desc limit ${page.limit + 1}`.execute(db);
  return rows.map((r) => ({ ...r, created_at: r.created_at.toISOString() }));
}
