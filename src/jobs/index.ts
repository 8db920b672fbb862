import type { TaskList } from 'graphile-worker';
import { recordVerification, verifyLedger } from '../credits/index.ts';
import type { Db } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';

export { addJob, type JobOptions } from './enqueue.ts';
export { startWorker, type WorkerHandle } from './worker.ts';

/** What tasks need from the process, passed in once by main.ts. */
export interface TaskDeps {
  db: Db;
  log: Logger;
}

/**
 * The one task list and crontab of Credence. Each task parses its payload
 * (a row may have been written by older code), re-reads state, and is safe
 * to run twice.
 */
export function buildTaskList(deps: TaskDeps): TaskList {
  return {
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

export const CRONTAB = ['0 * * * * ledger_verify ?max=1'].join('\n');
