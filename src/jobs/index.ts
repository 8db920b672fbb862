import { parseCrontab, type TaskList } from 'graphile-worker';
import { sql } from 'kysely';
import * as campaigns from '../campaigns/index.ts';
import { abandonContactImport, runContactImport } from '../contacts/index.ts';
import { recordVerification, verifyLedger } from '../credits/index.ts';
import type { Db, DbOrTx } from '../db/db.ts';
import { dispatchOrganization, drainSenderQueue, reconcile, type SendDeps, scheduleDispatch, sendBatch, sweep } from '../messaging/index.ts';
import type { Logger } from '../shared/logger.ts';

export { addJob, type JobOptions } from './enqueue.ts';
export { startWorker, type WorkerHandle } from './worker.ts';

/** What tasks need from the process, passed in once by main.ts. */
export interface TaskDeps {
  db: Db;
  log: Logger;
  send: SendDeps;
  /** A message queued this long without a claim has lost its send job (default 2 minutes). */
  staleQueuedMs?: number;
}

function stringField(payload: unknown, field: string): string {
  const value = typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>)[field] : undefined;
  if (typeof value !== 'string' || value === '') throw new Error(`job payload: ${field} must be a non-empty string`);
  return value;
}

function stringArray(payload: unknown, field: string): string[] {
  const value = typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>)[field] : undefined;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw new Error(`job payload: ${field} must be an array of strings`);
  }
  return value as string[];
}

/**
 * The one task list and crontab of Credence. Each task parses its payload
 * (a row may have been written by older code), re-reads state, and is safe
 * to run twice.
 */
export function buildTaskList(deps: TaskDeps): TaskList {
  return {
    /** Reserve credits for an organization's due messages and queue their sends. */
    dispatch: async (payload) => {
      const organizationId = stringField(payload, 'organizationId');
      const includeBlocked = (payload as { includeBlocked?: unknown }).includeBlocked === true;
      // the send path's Db (generic plans in its transactions)
      const report = await dispatchOrganization(deps.send.db, organizationId, { includeBlocked });
      if (report.batches > 0) deps.log.debug({ organization_id: organizationId, ...report }, 'dispatched');
    },
    /** Claim, send and record one batch of queued messages. */
    send: async (payload) => {
      await sendBatch(deps.send, stringArray(payload, 'messageIds'));
    },
    /** A turn of a sender's queue: its next waiting messages, as its rate slots free up. */
    sender_queue: async (payload) => {
      await drainSenderQueue(deps.send, { workspaceId: stringField(payload, 'workspaceId'), fromNumber: stringField(payload, 'fromNumber') });
    },
    /** Settle messages whose outcome is unknown or whose worker died mid-send. */
    reconcile: async () => {
      // One reconciliation at a time, under a session lock: it dies with the
      // connection of a worker that dies (a graphile-worker named queue would
      // stay locked for hours after a SIGKILL, and reconciliation with it).
      await deps.db.connection().execute(async (conn) => {
        const { rows } = await sql<{ got: boolean }>`select pg_try_advisory_lock(${RECONCILE_LOCK}) as got`.execute(conn);
        if (!rows[0]!.got) return;
        try {
          const report = await reconcile(deps.send);
          if (report.checked > 0) deps.log.info(report, 'reconciliation');
        } finally {
          await sql`select pg_advisory_unlock(${RECONCILE_LOCK})`.execute(conn);
        }
      });
    },
    /** Safety net: due work whose wake-up was lost is picked up within a minute. */
    sweep: async () => {
      await deps.db.transaction().execute(async (trx) => {
        const found = await sweep(trx, { ...(deps.staleQueuedMs !== undefined && { staleQueuedMs: deps.staleQueuedMs }) });
        for (const org of found.organizations) await scheduleDispatch(trx, org);
        await campaigns.sweepCampaigns(trx);
      });
      const removed = await removeSpentPeriodicJobs(deps.db);
      if (removed.length > 0) deps.log.info({ jobs: removed }, 'removed periodic jobs whose one attempt was spent (the next period runs them)');
    },
    /** Turn a campaign's next recipients into messages and move its cursor. */
    campaign_advance: async (payload) => {
      await campaigns.advanceCampaign(deps, stringField(payload, 'campaignId'));
    },
    /** A scheduled campaign's start time has come. */
    campaign_start: async (payload) => {
      await campaigns.startScheduled(deps.db, stringField(payload, 'campaignId'));
    },
    /** Complete a campaign whose recipients are all done; pause one past its error threshold. */
    campaign_check: async (payload) => {
      await campaigns.checkCampaign(deps, stringField(payload, 'campaignId'));
    },
    /** Parse an uploaded contacts CSV, in batches, with progress. */
    contact_import: async (payload, helpers) => {
      try {
        await runContactImport(deps, payload);
      } catch (err) {
        if (helpers.job.attempts < helpers.job.max_attempts) throw err;
        // the last attempt: the import records the failure (its row, not the job, is what users see)
        await abandonContactImport(deps, payload, helpers.job.attempts, err);
      }
    },
    /** G4: recompute every account from its entries; the result feeds /metrics. */
    ledger_verify: async () => {
      const report = await verifyLedger(deps.db);
      await recordVerification(deps.db, report);
      if (report.mismatches.length > 0) {
        deps.log.error({ mismatches: report.mismatches.slice(0, 50) }, 'ledger verify found mismatches');
      } else {
        deps.log.info({ accounts: report.accounts_checked }, 'ledger verify clean');
      }
    },
  };
}

/** Advisory lock key of the reconciliation (any constant unique among Credence's session locks). */
export const RECONCILE_LOCK = 0x43524543; // "CREC"

export const CRONTAB = [
  '0 * * * * ledger_verify ?max=1',
  // one reconciliation at a time: see the task's session lock; maintenance
  // runs before a backlog of sends (priority -10: MAINTENANCE_PRIORITY)
  '* * * * * reconcile ?max=1&priority=-10',
  '* * * * * sweep ?max=1&priority=-10',
].join('\n');

/** The tasks the crontab runs: each once a period, with one attempt. */
export const PERIODIC_TASKS: readonly string[] = [...new Set(parseCrontab(CRONTAB).map((item) => item.task))];

/**
 * A periodic job taken by a job runner that then died (its database lost,
 * its process killed) has spent its one attempt: once unlocked (by the
 * supervisor in `startWorker`, or by graphile-worker after four hours) it is
 * never run again, and graphile-worker keeps such jobs for good. The next
 * period runs the task anyway, so the spent copy is deleted (the sweep does
 * it, once a period). A periodic job that failed on its own is deleted too:
 * its error was logged when it failed. Returns the deleted jobs' tasks.
 */
export async function removeSpentPeriodicJobs(db: DbOrTx): Promise<string[]> {
  const { rows } = await sql<{ task: string }>`
    delete from graphile_worker._private_jobs j using graphile_worker._private_tasks t
    where t.id = j.task_id and t.identifier = any(${PERIODIC_TASKS}::text[])
      and j.locked_at is null and j.attempts >= j.max_attempts
    returning t.identifier as task`.execute(db);
  return rows.map((r) => r.task);
}
