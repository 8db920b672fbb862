import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { expect } from 'vitest';
import { twilioSignature } from '../../src/carriers/signature.ts';
import { createStatusCallbackBatcher, dispatchOrganization, sendBatch } from '../../src/messaging/index.ts';
import { claim } from '../../src/messaging/claim.ts';
import { silentLog } from './app.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './pipeline.ts';

/**
 * Fixtures for the status-callback batcher tests (test/statusBatch*.test.ts).
 *
 * Messages are made through the API and moved on by the real steps
 * (dispatch, claim, the send step against the simulator). The simulator's
 * own callbacks are held back (delays of ten minutes) so that the callbacks
 * each test submits are the only ones.
 *
 * Each test file owns its pipeline (`startStatusBatchPipeline` in its
 * `beforeAll`) and its helpers (`statusBatchHelpers`), which carry that file's
 * phone counter.
 */
const FAR = { sent: [600_000, 600_000] as [number, number], final: [600_000, 600_000] as [number, number] };

/** A pipeline without a worker, the simulator's callbacks held back, credits granted and no hourly cap. */
export async function startStatusBatchPipeline(): Promise<Pipeline> {
  const p = await startPipeline({ withWorker: false, callbackDelayMs: FAR });
  try {
    await grantCredits(p, 100_000);
    // these files send far more than the default 100 transactional messages an hour
    await sql`update workspaces set hourly_cap = null where id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
  } catch (err) {
    await p.close();
    throw err;
  }
  return p;
}

export const newSid = () => `SM${randomBytes(16).toString('hex')}`;

export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export const params = (sid: string, status: string, errorCode?: number) => ({
  MessageSid: sid,
  MessageStatus: status,
  ...(errorCode !== undefined && { ErrorCode: String(errorCode) }),
});

/** A promise's answer, readable without awaiting it. */
export function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  const done = promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return { state, done };
}

export interface Submission {
  id: string;
  status: 'sent' | 'delivered';
  sid: string;
}
export const keyOf = (s: Submission) => `${s.id}|${s.status}|${s.sid}`;

/**
 * Helpers against one test file's pipeline. `pipeline` is read on each call,
 * so the file may start its pipeline in `beforeAll` after calling this.
 * Phone numbers are unique within the file (one counter per call of this).
 */
export function statusBatchHelpers(pipeline: () => Pipeline) {
  let phone = 3000;

  const batcherFor = (options: { maxBatch?: number; maxInFlight?: number } = {}) =>
    createStatusCallbackBatcher({ db: pipeline().tdb.db, log: silentLog }, options);

  /** `n` messages through the API, `planned`. */
  async function create(n: number, label: string): Promise<string[]> {
    const p = pipeline();
    const ids: string[] = [];
    for (let i = 0; i < n; i += 25) {
      const chunk = await Promise.all(
        Array.from({ length: Math.min(25, n - i) }, (_, j) => sendViaApi(p, { to: `+1415555${String(phone++).padStart(4, '0')}`, body: `${label} ${i + j}` })),
      );
      for (const r of chunk) {
        expect(r.statusCode).toBe(202);
        ids.push(r.json.id as string);
      }
    }
    return ids;
  }

  /** Dispatched and claimed: `sending`, no carrier id yet (a worker is between its carrier call and its outcome step). */
  async function toSending(ids: string[]): Promise<void> {
    const p = pipeline();
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    const claimed = await claim(p.sendDeps, ids);
    expect(claimed).toHaveLength(ids.length);
  }

  /** Dispatched and sent to the simulator by the real send step: `sent`, with the carrier's sid. */
  async function toSent(ids: string[]): Promise<Map<string, string>> {
    const p = pipeline();
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    for (let i = 0; i < ids.length; i += 50) await sendBatch(p.sendDeps, ids.slice(i, i + 50));
    const sids = new Map<string, string>();
    for (const id of ids) {
      const m = await message(p, id);
      expect(m.status).toBe('sent');
      expect(m.provider_sid).toMatch(/^SM/);
      sids.set(id, m.provider_sid!);
    }
    return sids;
  }

  async function statuses(ids: readonly string[]): Promise<Map<string, { status: string; provider_sid: string | null }>> {
    const { rows } = await sql<{ id: string; status: string; provider_sid: string | null }>`
      select id, status, provider_sid from messages where id = any(${[...ids]}::text[])`.execute(pipeline().tdb.db);
    return new Map(rows.map((r) => [r.id, r]));
  }

  /** Events after `sinceSeq`, per message: event name → count. */
  async function eventsSince(ids: readonly string[], sinceSeq = 0): Promise<Map<string, Record<string, number>>> {
    const { rows } = await sql<{ message_id: string; event: string; n: number }>`
      select message_id, event, count(*)::int as n from message_events
      where message_id = any(${[...ids]}::text[]) and seq > ${sinceSeq} group by 1, 2`.execute(pipeline().tdb.db);
    const out = new Map<string, Record<string, number>>(ids.map((id) => [id, {}]));
    for (const r of rows) out.get(r.message_id)![r.event] = r.n;
    return out;
  }

  async function lastEventSeq(): Promise<number> {
    const { rows } = await sql<{ seq: number | null }>`select max(seq)::int as seq from message_events`.execute(pipeline().tdb.db);
    return rows[0]!.seq ?? 0;
  }

  /** The pipeline's capturer has applied every queued capture (balances stand still from here). */
  async function capturesDrained(): Promise<void> {
    await eventually(async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from capture_queue`.execute(pipeline().tdb.db);
      return rows[0]!.n === 0 ? true : undefined;
    });
  }

  /** A status callback through the real route, signed as the carrier signs it. */
  async function postStatus(id: string, form: Record<string, string>): Promise<number> {
    const p = pipeline();
    const url = `${p.apiUrl}/webhooks/twilio/status?message_id=${encodeURIComponent(id)}`;
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature(p.simulator.accounts[0]!.authToken, url, form) },
      body: new URLSearchParams(form).toString(),
    });
    await res.text();
    return res.status;
  }

  /** Backends of this database waiting for a lock (the one-message path blocked on a held row). */
  async function lockWaiters(): Promise<number> {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(pipeline().tdb.db);
    return rows[0]!.n;
  }

  return { batcherFor, create, toSending, toSent, statuses, eventsSince, lastEventSeq, capturesDrained, postStatus, lockWaiters };
}
