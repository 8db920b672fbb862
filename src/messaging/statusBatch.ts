import { sql } from 'kysely';
import type { Db } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';
import * as store from './messages.store.ts';
import {
  type CallbackResult,
  FAST_FROM,
  fastPatch,
  handleStatusCallback,
  isFastReport,
  readStatusCallback,
  settleStatusReport,
  type StatusReport,
} from './settle.ts';

/**
 * Status callbacks come two per message (`sent`, then the final status),
 * each its own HTTP request. Applied one by one they cost a statement and a
 * commit (a WAL flush) each. The batcher gathers the callbacks that arrive
 * while earlier ones are being written and applies their common forward
 * steps in one transaction: one statement per event, one commit for all.
 * Each request is answered only after the commit that holds its step, so a
 * 200 still means "recorded"; a failed commit fails every request in it
 * (the carrier retries them).
 *
 * Lock safety: the batch statements skip messages another transaction holds
 * (a worker's outcome step, a refund) instead of waiting with other rows
 * locked; those, and everything that is not a plain forward step, go
 * through the one-message path, which holds a single row at a time.
 */
export interface StatusCallbackBatcher {
  submit(messageId: string, params: Record<string, string>): Promise<CallbackResult>;
  /** Waits for the batches in flight. */
  close(): Promise<void>;
}

interface Pending {
  report: StatusReport;
  resolve: (r: CallbackResult) => void;
  reject: (err: unknown) => void;
}

export interface BatcherOptions {
  /** Most callbacks in one transaction. */
  maxBatch?: number;
  /** Batches written at once; the next gathers while these commit. */
  maxInFlight?: number;
}

export function createStatusCallbackBatcher(deps: { db: Db; log: Logger }, options: BatcherOptions = {}): StatusCallbackBatcher {
  const maxBatch = options.maxBatch ?? 500;
  const maxInFlight = options.maxInFlight ?? 2;
  let pending: Pending[] = [];
  let inFlight = 0;
  let scheduled = false;
  const running = new Set<Promise<void>>();

  const pump = (): void => {
    scheduled = false;
    while (pending.length > 0 && inFlight < maxInFlight) {
      const batch = pending.slice(0, maxBatch);
      pending = pending.slice(batch.length);
      inFlight++;
      const run = flush(deps, batch).finally(() => {
        inFlight--;
        running.delete(run);
        pump();
      });
      running.add(run);
    }
  };

  return {
    submit(messageId, params) {
      const report = readStatusCallback(messageId, params);
      if (report === undefined || !isFastReport(report)) return handleStatusCallback(deps, messageId, params);
      return new Promise<CallbackResult>((resolve, reject) => {
        pending.push({ report, resolve, reject });
        // everything submitted in this turn of the event loop goes in one batch
        if (!scheduled) {
          scheduled = true;
          setImmediate(pump);
        }
      });
    },
    async close() {
      while (running.size > 0 || pending.length > 0) {
        if (running.size === 0) pump();
        await Promise.allSettled([...running]);
      }
    },
  };
}

const keyOf = (r: StatusReport) => `${r.messageId}\u0000${r.event}\u0000${r.sid}`;

async function flush(deps: { db: Db; log: Logger }, batch: readonly Pending[]): Promise<void> {
  // The same callback twice in one batch (a duplicate delivery) is applied once and answered twice.
  const byKey = new Map<string, Pending[]>();
  for (const p of batch) byKey.set(keyOf(p.report), [...(byKey.get(keyOf(p.report)) ?? []), p]);
  const answer = (r: StatusReport, outcome: { result: CallbackResult } | { error: unknown }) => {
    for (const p of byKey.get(keyOf(r)) ?? []) {
      if ('result' in outcome) p.resolve(outcome.result);
      else p.reject(outcome.error);
    }
  };
  const unique = [...byKey.values()].map((ps) => ps[0]!.report);
  const moved = new Set<string>();
  try {
    await deps.db.transaction().execute(async (trx) => {
      // `sent` before `delivered`: both for one message in one batch apply in order
      for (const event of ['carrier_sent', 'carrier_delivered'] as const) {
        const items = unique.filter((r) => r.event === event).map((r) => ({ id: r.messageId, patch: fastPatch(r) }));
        for (const row of await store.applyEvent(trx, event, items, { onlyFrom: FAST_FROM, skipLocked: true })) moved.add(`${row.id}\u0000${event}`);
      }
    });
  } catch (error) {
    for (const r of unique) answer(r, { error });
    return;
  }
  const rest: StatusReport[] = [];
  for (const r of unique) {
    if (moved.has(`${r.messageId}\u0000${r.event}`)) answer(r, { result: 'applied' });
    else rest.push(r);
  }
  if (rest.length === 0) return;
  try {
    const { rows } = await sql<{ id: string; status: store.MessageRow['status']; provider_sid: string | null }>`
      select id, status, provider_sid from messages where id = any(${rest.map((r) => r.messageId)}::text[])`.execute(deps.db);
    const current = new Map(rows.map((c) => [c.id, c]));
    // each in its own transaction, holding at most its own message
    await Promise.all(
      rest.map((r) =>
        settleStatusReport(deps, r, current.get(r.messageId)).then(
          (result) => answer(r, { result }),
          (error: unknown) => answer(r, { error }),
        ),
      ),
    );
  } catch (error) {
    for (const r of rest) answer(r, { error });
  }
}
