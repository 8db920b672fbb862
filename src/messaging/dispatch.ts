import { sql } from 'kysely';
import * as credits from '../credits/index.ts';
import type { Db, Tx } from '../db/db.ts';
import { addJob, addJobs } from '../jobs/enqueue.ts';
import { newId } from '../shared/ids.ts';
import * as store from './messages.store.ts';
import { CAMPAIGN_CLAIMABLE, CAMPAIGN_ENDED, CAMPAIGN_RUNNING, pauseCampaigns } from './campaignGate.ts';
import { decide, type RuleColumns } from './rules.ts';

export const DISPATCH_BATCH = 500;
/**
 * Messages per send job: one claim transaction and one outcome transaction
 * (and one job fetched and completed) for each. 100 rather than 50 cost
 * about 6 % less CPU per message in the benchmarks (2026-11-24, alternating
 * runs; docs/performance.md), with the worker's default concurrency (8), so
 * the same number of messages in flight as 50 × 16. A worker killed mid-job
 * leaves up to this many messages `sending` for reconciliation, which looks
 * several up at a time (with one at a time, and the simulator scanning its
 * whole log for each look-up by number, a first try at 100 left a chaos run
 * minutes behind).
 */
export const SEND_BATCH = 100;

type Candidate = store.MessageRow & RuleColumns;

/**
 * Message `m` may go as far as consent is concerned, and its organization's
 * subscription lets it send. Written over the set-returning forms of the SQL
 * checks, which the planner inlines into the statement (migration 0010).
 */
export const CONSENT_ALLOWS = sql`exists (select 1 from credence_consent_check(m.workspace_id, m.to_number, m.purpose, m.producer) cc where cc.allowed)`;
export const SUBSCRIPTION_OK = sql`exists (select 1 from credence_subscription_check(m.organization_id) sc where sc.ok)`;

/** The workspace columns and consent verdict the send rules need, for a query over `messages m join workspaces w`. */
export function ruleColumns(stage: 'dispatch' | 'claim', options: { consent?: boolean } = {}) {
  // without consent: the caller checks it itself (the claim, in its UPDATE's WHERE)
  const consent = options.consent === false ? sql`true` : CONSENT_ALLOWS;
  return sql`w.sms_enabled, w.home_country, w.allowed_countries, w.send_windows,
  ${consent} as consent_ok,
  ${stage === 'dispatch' ? CAMPAIGN_RUNNING : CAMPAIGN_CLAIMABLE} as campaign_running,
  ${CAMPAIGN_ENDED} as campaign_ended,
  ${SUBSCRIPTION_OK} as subscription_ok`;
}

/**
 * Wake the organization's dispatcher when the earliest deferred message is
 * due (the minute sweep is the safety net). One job per organization and
 * minute, whatever the number of deferrals.
 */
export async function scheduleDeferred(trx: Tx, items: readonly { organizationId: string; until: Date }[]): Promise<void> {
  const seen = new Set<string>();
  for (const { organizationId, until } of items) {
    const minute = new Date(Math.ceil(until.getTime() / 60_000) * 60_000);
    const key = `dispatch:${organizationId}:at:${minute.toISOString()}`;
    if (seen.has(key)) continue;
    seen.add(key);
    await addJob(trx, 'dispatch', { organizationId, includeBlocked: false }, { jobKey: key, jobKeyMode: 'preserve_run_at', runAt: until, maxAttempts: 25 });
  }
}

/** Queue `send` jobs for reserved messages, in chunks (same transaction as the reservation). */
export async function enqueueSends(trx: Tx, ids: readonly string[], runAt?: Date): Promise<void> {
  const payloads: { messageIds: string[] }[] = [];
  for (let i = 0; i < ids.length; i += SEND_BATCH) payloads.push({ messageIds: ids.slice(i, i + SEND_BATCH) });
  await addJobs(trx, 'send', payloads, { maxAttempts: 10, ...(runAt && { runAt }) });
}

/** One dispatch batch of an organization at a time, in every process: the caller's transaction holds its turn until it ends. */
export async function lockOrganizationDispatch(trx: Tx, organizationId: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${`dispatch:${organizationId}`}, 0))`.execute(trx);
}

export interface DispatchReport {
  queued: number;
  blocked: number;
  skipped: number;
  deferred: number;
  batches: number;
}

/**
 * Dispatch an organization's due messages in batches: re-check the gates,
 * reserve credits for the longest affordable prefix in one ledger call, move
 * those to `queued` and add their send jobs in the same transaction; what
 * does not fit becomes `blocked` (resumable when credits arrive).
 */
export async function dispatchOrganization(
  db: Db,
  organizationId: string,
  options: { includeBlocked?: boolean } = {},
): Promise<DispatchReport> {
  const report: DispatchReport = { queued: 0, blocked: 0, skipped: 0, deferred: 0, batches: 0 };
  // An organization's runs take turns, one batch at a time (lockOrganizationDispatch): credits go
  // to its messages in id order, the paid-for prefix of a campaign. Without turns a second run
  // skipped to the next batch, could reach the account lock first and spend the credits past
  // the first run's batch, which was then blocked (test/dispatch.order.test.ts); the ledger's
  // account lock serialised their reservations anyway. Rows other transactions hold (a pause,
  // an opt-out) are still skipped, not waited for: waiting in id order deadlocked with an
  // outcome step opting out several numbers, each of whose messages it locked in turn.
  // Blocked messages are looked at once per call (after a purchase, an unfreeze): a batch that
  // still cannot go must not be picked up again in the same call.
  let blockedAfter = '';
  for (;;) {
    const { rows: more } = await db.transaction().execute(async (trx) => {
      await lockOrganizationDispatch(trx, organizationId);
      const { rows } = await sql<Candidate>`
        select m.*, ${ruleColumns('dispatch')} from messages m join workspaces w on w.id = m.workspace_id
        where m.organization_id = ${organizationId}
          and (
            (m.status = 'planned' and m.send_at <= now())
            or (m.status = 'deferred' and coalesce(m.next_attempt_at, m.send_at) <= now())
            ${options.includeBlocked ? sql`or (m.status = 'blocked' and m.id > ${blockedAfter})` : sql``}
          )
        order by m.id
        limit ${DISPATCH_BATCH}
        for update of m skip locked`.execute(trx);
      if (rows.length === 0) return { rows };
      report.batches++;
      const lastBlocked = rows.filter((r) => r.status === 'blocked').at(-1);
      if (lastBlocked) blockedAfter = lastBlocked.id;

      const { rows: orgRows } = await sql<{ frozen: boolean; debt: number }>`
        select o.frozen_at is not null as frozen, coalesce(a.debt, 0)::bigint as debt
        from organizations o left join credit_accounts a on a.organization_id = o.id where o.id = ${organizationId}`.execute(trx);
      const org = orgRows[0] ?? { frozen: true, debt: 0 };

      const toReserve: Candidate[] = [];
      const toBlock: { id: string; patch: store.Patch }[] = [];
      const stillBlocked: { id: string; reason: string }[] = [];
      const toSkip: { id: string; patch: store.Patch }[] = [];
      const toDefer: { id: string; patch: store.Patch; until: Date }[] = [];
      const now = new Date();
      for (const m of rows) {
        // Decided before any credit is reserved: a message that may not go now costs nothing.
        const d = decide(m, { organizationFrozen: org.frozen, workspaceSmsEnabled: m.sms_enabled, debt: org.debt }, now);
        switch (d.action) {
          case 'go':
            toReserve.push(m);
            break;
          case 'block':
            if (d.reason === 'debt_outstanding') stillBlocked.push({ id: m.id, reason: d.reason });
            if (m.status !== 'blocked' || m.status_reason !== d.reason) toBlock.push({ id: m.id, patch: { reason: d.reason } });
            break;
          case 'skip':
            toSkip.push({ id: m.id, patch: { reason: d.reason } });
            break;
          case 'defer':
            toDefer.push({ id: m.id, until: d.until, patch: { reason: d.reason, next_attempt_at: d.until.toISOString() } });
            break;
          default: {
            const never: never = d;
            throw new Error(`unhandled decision ${String(never)}`);
          }
        }
      }
      report.skipped += (await store.applyEvent(trx, 'skip', toSkip)).length;
      const deferred = await store.applyEvent(trx, 'defer', toDefer);
      report.deferred += deferred.length;
      await scheduleDeferred(
        trx,
        toDefer.filter((d) => deferred.some((x) => x.id === d.id)).map((d) => ({ organizationId, until: d.until })),
      );

      if (toReserve.length > 0) {
        const result = await credits.reserve(trx, {
          organizationId,
          items: toReserve.map((m) => ({ messageId: m.id, amount: m.cost })),
          idempotencyKey: `dispatch:${newId('rsv')}`,
          actor: { type: 'system', id: 'dispatch' },
        });
        const byId = new Map(toReserve.map((m) => [m.id, m]));
        // Another dispatch run may have paused a campaign while we waited for
        // the account lock: its later messages must not slip past the
        // paid-for prefix (a fresh statement sees that pause).
        const campaignIds = [...new Set(result.reserved.flatMap((r) => byId.get(r.message_id)?.campaign_id ?? []))];
        const { rows: stopped } = campaignIds.length
          ? await sql<{ id: string; pause_reason: string | null }>`select id, pause_reason from campaigns where id = any(${campaignIds}::text[]) and status <> 'running'`.execute(trx)
          : { rows: [] };
        const stoppedReason = new Map(stopped.map((c) => [c.id, c.pause_reason === 'insufficient_credits' ? 'insufficient_credits' : 'campaign_paused']));
        const late = result.reserved.filter((r) => stoppedReason.has(byId.get(r.message_id)?.campaign_id ?? ''));
        if (late.length > 0) {
          await credits.release(trx, {
            organizationId,
            reservationIds: late.map((r) => r.reservation_id),
            idempotencyKey: `release:${newId('rsv')}`,
            actor: { type: 'system', id: 'dispatch' },
            reason: 'campaign paused while this dispatch waited',
          });
          for (const r of late) toBlock.push({ id: r.message_id, patch: { reason: stoppedReason.get(byId.get(r.message_id)!.campaign_id!)! } });
        }
        const lateIds = new Set(late.map((r) => r.message_id));
        const reserved = result.reserved
          .filter((r) => !lateIds.has(r.message_id))
          .map((r) => ({ id: r.message_id, patch: { reservation_id: r.reservation_id, reason: null } }));
        await store.applyEvent(trx, 'reserved', reserved);
        for (const nr of result.not_reserved) {
          const m = byId.get(nr.message_id);
          if (m) stillBlocked.push({ id: m.id, reason: nr.reason });
          if (m && (m.status !== 'blocked' || m.status_reason !== nr.reason)) toBlock.push({ id: m.id, patch: { reason: nr.reason } });
        }
        await enqueueSends(
          trx,
          reserved.map((r) => r.id),
        );
        report.queued += reserved.length;
      }
      // `block` does not apply to messages already blocked (same reason): they simply stay.
      const moved = await store.applyEvent(trx, 'block', toBlock.filter((b) => rows.find((r) => r.id === b.id)?.status !== 'blocked'));
      report.blocked += moved.length;
      // A campaign that cannot pay for its next message, or whose workspace
      // is disabled, pauses itself (last: the campaign row after the account row).
      const byId = new Map(rows.map((r) => [r.id, r]));
      const pauseFor = {
        insufficient_credits: 'insufficient_credits',
        debt_outstanding: 'insufficient_credits',
        workspace_disabled: 'workspace_disabled',
        subscription_inactive: 'subscription_inactive',
      } as const;
      for (const [reason, pause] of Object.entries(pauseFor)) {
        // newly blocked, or blocked for credits before and still (a campaign resumed without
        // credits: its advance waits for these, so it is this run that pauses it again). Only
        // for credits: a run deciding on a gate that has reopened since (workspace, subscription)
        // would pause a campaign its reopening had just resumed, and nothing resumes it again.
        // A stale "no credits" pause is resumed by the sweep once the credits cover it.
        const campaigns = new Set(
          [...toBlock.map((b) => ({ id: b.id, reason: b.patch.reason })), ...stillBlocked]
            .filter((b) => b.reason === reason)
            .flatMap((b) => byId.get(b.id)?.campaign_id ?? []),
        );
        // no row locks here: this transaction already holds the account lock, and
        // every one of these reasons is re-checked (or allowed) at claim anyway
        await pauseCampaigns(trx, [...campaigns], pause, 'dispatch', { lockMessages: false });
      }
      return { rows };
    });
    if (more.length < DISPATCH_BATCH) break;
  }
  return report;
}
