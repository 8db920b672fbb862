import { sql } from 'kysely';
import type { DbOrTx, Tx } from '../db/db.ts';
import { DomainError, notFound, validationError } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import { parsePhone } from './phone.ts';

/** A workspace's sender numbers, and the per-sender send rate shared by every worker. */
export interface SenderNumber {
  id: string;
  workspace_id: string;
  phone_number: string;
  kind: 'long_code' | 'toll_free' | 'short_code' | 'alphanumeric';
  mps: number;
  is_default: boolean;
  created_at: string;
}

interface SenderRow extends Omit<SenderNumber, 'created_at' | 'mps'> {
  organization_id: string;
  mps: string;
  next_slot_at: Date;
  created_at: Date;
}

function toSender(row: SenderRow): SenderNumber {
  return {
    id: row.id,
    workspace_id: row.workspace_id,
    phone_number: row.phone_number,
    kind: row.kind,
    mps: Number(row.mps),
    is_default: row.is_default,
    created_at: row.created_at.toISOString(),
  };
}

export async function addSenderNumber(
  db: DbOrTx,
  scope: { organizationId: string; workspaceId: string },
  input: { phone_number: string; kind?: SenderNumber['kind']; mps?: number; is_default?: boolean },
): Promise<SenderNumber> {
  const kind = input.kind ?? 'long_code';
  let number = input.phone_number.trim();
  if (kind === 'alphanumeric') {
    if (!/^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$/.test(number)) {
      throw validationError('phone_number', 'an alphanumeric sender id is 1–11 letters, digits or spaces, with a letter');
    }
  } else {
    const parsed = parsePhone(number);
    if (!parsed.ok) throw validationError('phone_number', parsed.reason);
    number = parsed.e164;
  }
  const mps = input.mps ?? (kind === 'short_code' ? 100 : kind === 'toll_free' ? 3 : 1);
  const run = async (trx: Tx) => {
    const existing = await sql<{ n: number }>`select count(*)::int as n from sender_numbers where workspace_id = ${scope.workspaceId}`.execute(trx);
    const makeDefault = input.is_default ?? existing.rows[0]!.n === 0;
    if (makeDefault) await sql`update sender_numbers set is_default = false where workspace_id = ${scope.workspaceId} and is_default`.execute(trx);
    const { rows } = await sql<SenderRow>`insert into sender_numbers (id, organization_id, workspace_id, phone_number, kind, mps, is_default)
      values (${newId('num')}, ${scope.organizationId}, ${scope.workspaceId}, ${number}, ${kind}, ${mps}, ${makeDefault})
      on conflict do nothing returning *`.execute(trx);
    // unique per workspace, and (for phone numbers) across workspaces: inbound texts are routed by the number
    if (rows[0] === undefined) throw new DomainError('conflict', `${number} is already a sender number (here or in another workspace).`);
    return toSender(rows[0]);
  };
  return db.isTransaction ? run(db as Tx) : db.transaction().execute(run);
}

export async function listSenderNumbers(db: DbOrTx, workspaceId: string): Promise<SenderNumber[]> {
  const { rows } = await sql<SenderRow>`select * from sender_numbers where workspace_id = ${workspaceId} order by id`.execute(db);
  return rows.map(toSender);
}

export async function updateSenderNumber(
  db: DbOrTx,
  workspaceId: string,
  id: string,
  input: { mps?: number; is_default?: boolean },
): Promise<SenderNumber> {
  const run = async (trx: Tx) => {
    if (input.is_default === true) {
      await sql`update sender_numbers set is_default = false where workspace_id = ${workspaceId} and is_default and id <> ${id}`.execute(trx);
    }
    const { rows } = await sql<SenderRow>`update sender_numbers set
        mps = coalesce(${input.mps ?? null}::numeric, mps),
        is_default = coalesce(${input.is_default ?? null}::boolean, is_default)
      where workspace_id = ${workspaceId} and id = ${id} returning *`.execute(trx);
    if (rows[0] === undefined) throw notFound('Sender number');
    return toSender(rows[0]);
  };
  return db.isTransaction ? run(db as Tx) : db.transaction().execute(run);
}

/** The sender a message goes out from: the one asked for (must be the workspace's), or the default. */
export async function resolveSender(db: DbOrTx, workspaceId: string, requested?: string): Promise<string> {
  const { rows } = await sql<{ phone_number: string }>`select phone_number from sender_numbers
    where workspace_id = ${workspaceId}
      and ${requested === undefined ? sql`is_default` : sql`phone_number = ${normaliseSender(requested)}`}`.execute(db);
  if (rows[0] === undefined) {
    throw requested === undefined
      ? validationError('from', 'this workspace has no sender number yet: add one with POST /v1/sender-numbers')
      : validationError('from', `${requested} is not a sender number of this workspace`);
  }
  return rows[0].phone_number;
}

function normaliseSender(value: string): string {
  const parsed = parsePhone(value);
  return parsed.ok ? parsed.e164 : value.trim();
}

/**
 * Take up to `wanted` send slots of one sender within the next `horizonMs`,
 * in one statement under the sender row's lock: each slot is 1/mps seconds,
 * so the rate holds across every worker process. Returns when the first
 * granted slot starts and the spacing between slots; `granted` may be 0
 * (come back at `nextFreeAt`). Run it on its own (not inside a longer
 * transaction): the row lock is then held for this statement only, and
 * claims of one sender do not queue behind each other's whole transaction.
 */
export async function takeSendSlots(
  db: DbOrTx,
  workspaceId: string,
  phoneNumber: string,
  wanted: number,
  horizonMs: number,
): Promise<{ granted: number; startAt: number; intervalMs: number; nextFreeAt: number }> {
  const { rows } = await sql<{ granted: number; start_ms: number; interval_ms: number }>`
    with s as (
      select 1000 / mps::float8 as interval_ms, extract(epoch from clock_timestamp()) * 1000 as now_ms,
        extract(epoch from next_slot_at) * 1000 as next_ms
      from sender_numbers where workspace_id = ${workspaceId} and phone_number = ${phoneNumber} for update
    ), k as (
      select interval_ms, greatest(now_ms, next_ms) as start_ms,
        least(${wanted}::int, greatest(0, floor((now_ms + ${horizonMs}::float8 - greatest(now_ms, next_ms)) / interval_ms) + 1))::int as granted
      from s
    ), u as (
      update sender_numbers set next_slot_at = to_timestamp((k.start_ms + k.granted * k.interval_ms) / 1000)
      from k where workspace_id = ${workspaceId} and phone_number = ${phoneNumber} and k.granted > 0
    )
    select granted, start_ms, interval_ms from k`.execute(db);
  const row = rows[0];
  if (row === undefined) {
    // A sender removed after the message was made: no limit to hold.
    return { granted: wanted, startAt: Date.now(), intervalMs: 0, nextFreeAt: Date.now() };
  }
  const startAt = Number(row.start_ms);
  const intervalMs = Number(row.interval_ms);
  return { granted: row.granted, startAt, intervalMs, nextFreeAt: startAt + row.granted * intervalMs };
}
