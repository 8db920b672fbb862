import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Tx } from '../db/db.ts';
import {
  applyFrequencyCaps,
  applyHourlyCap,
  type CapPurpose,
  effectiveFrequencyCaps,
  type FrequencyCap,
  HOURLY_CAPPED,
} from '../sendrules/caps.ts';
import type { MessageRow } from './messages.store.ts';

/**
 * Sending limits at claim: per-phone frequency caps and the per-workspace
 * hourly cap. Both count sends other workers may be claiming right now, so
 * the reads happen under transaction-scoped advisory locks (one per phone,
 * one per workspace), always taken in ascending key order so two claims can
 * never wait on each other in a cycle.
 */
export interface LimitRow extends MessageRow {
  frequency_caps: Partial<Record<CapPurpose, FrequencyCap | null>>;
  hourly_cap: number | null;
}

export interface LimitResult<T extends LimitRow> {
  allowed: T[];
  capped: T[];
  deferred: { row: T; until: Date }[];
}

/** A stable 63-bit advisory-lock key for a text identity. */
function lockKey(identity: string): bigint {
  return createHash('sha256').update(identity).digest().readBigInt64BE(0);
}

const exempt = (m: MessageRow) => m.producer === 'system';

export async function applyLimits<T extends LimitRow>(trx: Tx, rows: readonly T[], now: Date): Promise<LimitResult<T>> {
  const result: LimitResult<T> = { allowed: [], capped: [], deferred: [] };
  if (rows.length === 0) return result;
  const capsOf = new Map(rows.map((r) => [r.workspace_id, effectiveFrequencyCaps(r.frequency_caps)]));
  const freqRows = rows.filter((r) => !exempt(r) && capsOf.get(r.workspace_id)?.[r.purpose] !== undefined);
  const hourlyRows = rows.filter((r) => !exempt(r) && r.hourly_cap !== null && HOURLY_CAPPED.has(r.purpose));

  const keys = new Set<bigint>();
  for (const r of freqRows) keys.add(lockKey(`freq:${r.workspace_id}:${r.to_number}`));
  for (const r of hourlyRows) keys.add(lockKey(`hourly:${r.workspace_id}`));
  if (keys.size > 0) {
    // one statement for all of them (one round trip per claim, not per phone),
    // taken in the sorted subquery's order
    const sorted = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(String);
    await sql`select count(pg_advisory_xact_lock(k)) from (select k from unnest(${sorted}::bigint[]) as k order by k) as s`.execute(trx);
  }

  // Frequency caps: the phones' sends in the longest window of any cap in force.
  let capped = new Set<string>();
  if (freqRows.length > 0) {
    const maxHours = Math.max(...freqRows.map((r) => capsOf.get(r.workspace_id)![r.purpose]!.hours));
    const { rows: recent } = await sql<{ workspace_id: string; to_number: string; purpose: CapPurpose; claimed_at: Date }>`
      select workspace_id, to_number, purpose, claimed_at from messages
      where (workspace_id, to_number) in (select * from unnest(${freqRows.map((r) => r.workspace_id)}::text[], ${freqRows.map((r) => r.to_number)}::text[]))
        and claimed_at > now() - ${`${maxHours} hours`}::interval
        and status in ('sending', 'sent', 'delivered', 'undelivered', 'unknown')
        and producer <> 'system'
        and id <> all(${rows.map((r) => r.id)}::text[])`.execute(trx);
    for (const [ws, caps] of capsOf) {
      const decision = applyFrequencyCaps(
        freqRows.filter((r) => r.workspace_id === ws).map((r) => ({ id: r.id, phone: r.to_number, purpose: r.purpose, exempt: false })),
        recent.filter((r) => r.workspace_id === ws).map((r) => ({ phone: r.to_number, purpose: r.purpose, claimedAt: r.claimed_at })),
        caps,
        now,
      );
      capped = new Set([...capped, ...decision.capped]);
    }
  }

  // Hourly cap per workspace, over per-minute counters of the last hour.
  const hourlyDeferred = new Map<string, Date>();
  for (const ws of new Set(hourlyRows.map((r) => r.workspace_id))) {
    const candidates = hourlyRows.filter((r) => r.workspace_id === ws && !capped.has(r.id));
    const { rows: minutes } = await sql<{ minute: Date; sends: number }>`
      select minute, sends from send_counters where workspace_id = ${ws} and minute > now() - interval '1 hour'`.execute(trx);
    const decision = applyHourlyCap(
      candidates.map((r) => r.id),
      candidates[0]!.hourly_cap!,
      minutes,
      now,
    );
    for (const id of decision.deferred) hourlyDeferred.set(id, decision.retryAt);
  }

  for (const r of rows) {
    if (capped.has(r.id)) result.capped.push(r);
    else if (hourlyDeferred.has(r.id)) result.deferred.push({ row: r, until: hourlyDeferred.get(r.id)! });
    else result.allowed.push(r);
  }
  return result;
}

/** Count claimed sends into the hourly counters (same transaction, still under the locks). */
export async function countHourlySends(trx: Tx, claimed: readonly LimitRow[]): Promise<void> {
  const counted = claimed.filter((r) => !exempt(r) && r.hourly_cap !== null && HOURLY_CAPPED.has(r.purpose));
  if (counted.length === 0) return;
  const perWorkspace = new Map<string, number>();
  for (const r of counted) perWorkspace.set(r.workspace_id, (perWorkspace.get(r.workspace_id) ?? 0) + 1);
  await sql`insert into send_counters (workspace_id, minute, sends)
    select ws, date_trunc('minute', now()), n from unnest(${[...perWorkspace.keys()]}::text[], ${[...perWorkspace.values()]}::int[]) as x(ws, n)
    on conflict (workspace_id, minute) do update set sends = send_counters.sends + excluded.sends`.execute(trx);
}
