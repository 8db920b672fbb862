import { sql } from 'kysely';
import type { Db, Tx } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';
import type * as store from './messages.store.ts';
import { captureFor } from './reservations.ts';

/**
 * Captures owed for messages the carrier took, queued by the outcome step
 * in its own transaction and applied in batches by the drain: one lock of
 * each organization's account row per batch instead of one per outcome
 * step (G3: every reservation ends, captured when the carrier accepted).
 */
export async function queueCaptures(trx: Tx, rows: readonly Pick<store.MessageRow, 'id' | 'organization_id' | 'reservation_id'>[]): Promise<void> {
  const owed = rows.filter((r): r is typeof r & { reservation_id: string } => r.reservation_id !== null);
  if (owed.length === 0) return;
  await sql`insert into capture_queue (reservation_id, organization_id, message_id)
    select * from unnest(${owed.map((r) => r.reservation_id)}::text[], ${owed.map((r) => r.organization_id)}::text[], ${owed.map((r) => r.id)}::text[])
    on conflict (reservation_id) do nothing`.execute(trx);
}

/** Most captures in one drain transaction. */
export const CAPTURE_BATCH = 1_000;

/**
 * Apply up to `limit` queued captures in one transaction: the queue rows
 * are taken with SKIP LOCKED (drains in several processes split the work)
 * and deleted in the same transaction as their ledger captures. A
 * reservation already captured (by reconciliation, or by an undelivered
 * report) is refused by the ledger, harmlessly. Returns how many it took.
 */
export async function drainCaptures(db: Db, limit = CAPTURE_BATCH): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ reservation_id: string; organization_id: string }>`
      delete from capture_queue q using (
        select reservation_id from capture_queue order by queued_at limit ${limit} for update skip locked
      ) t where q.reservation_id = t.reservation_id
      returning q.reservation_id, q.organization_id`.execute(trx);
    // account rows in a fixed order: two drains never wait on each other in a cycle
    const sorted = [...rows].sort((a, b) => (a.organization_id < b.organization_id ? -1 : a.organization_id > b.organization_id ? 1 : 0));
    await captureFor(trx, sorted, 'carrier accepted');
    return rows.length;
  });
}

export interface Capturer {
  /** Drain soon (the caller has just queued captures). */
  wake(): void;
  stop(): Promise<void>;
}

/**
 * The drain loop of a worker process: woken by its own outcome steps, and
 * looking every `pollMs` for captures other processes queued (one that died
 * before draining, or a process with no capturer of its own).
 */
export function startCapturer(options: { db: Db; log: Logger; pollMs?: number; gatherMs?: number }): Capturer {
  const { db, log } = options;
  let stopped = false;
  let running: Promise<void> | undefined;
  let again = false;
  let timer: NodeJS.Timeout | undefined;

  const run = (): void => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = (async () => {
      // a short gathering window: the outcome steps of several batches in one capture
      await new Promise((r) => setTimeout(r, options.gatherMs ?? 20));
      let taken = CAPTURE_BATCH;
      while (!stopped && taken === CAPTURE_BATCH) taken = await drainCaptures(db);
    })()
      .catch((err: unknown) => log.warn({ err }, 'capture drain failed; it is tried again'))
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          run();
        } else if (!stopped) {
          timer = setTimeout(run, options.pollMs ?? 1_000);
          timer.unref();
        }
      });
  };
  run();

  return {
    wake: run,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
