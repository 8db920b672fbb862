import { type Runner, run, type TaskList, Logger as WorkerLogger } from 'graphile-worker';
import type pg from 'pg';
import { createDb } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';
import { addJob } from './enqueue.ts';

export interface WorkerHandle {
  stop(): Promise<void>;
  /** Resolves when the runner ends (stopped, or crashed). */
  done: Promise<void>;
}

/** graphile-worker's log lines go through our JSON logger with the job's scope. */
function workerLogger(log: Logger): WorkerLogger {
  return new WorkerLogger((scope) => (level, message, meta) => {
    const fields = { ...scope, ...(meta ?? {}) };
    switch (level) {
      case 'error':
        log.error(fields, message);
        break;
      case 'warning':
        log.warn(fields, message);
        break;
      case 'info':
        log.info(fields, message);
        break;
      default:
        log.debug(fields, message);
    }
  });
}

/** Maintenance jobs go before any backlog of sends (graphile-worker: lower runs first). */
export const MAINTENANCE_PRIORITY = -10;

export async function startWorker(options: {
  pool: pg.Pool;
  taskList: TaskList;
  crontab?: string;
  concurrency: number;
  log: Logger;
  pollInterval?: number;
  /**
   * Below a minute (the cron's grain), reconciliation and the sweep are also
   * added on this timer, each under one job key so workers never pile them up.
   */
  maintenanceIntervalMs?: number;
}): Promise<WorkerHandle> {
  const runner: Runner = await run({
    pgPool: options.pool,
    taskList: options.taskList,
    crontab: options.crontab ?? '',
    concurrency: options.concurrency,
    // Signals belong to the process: main.ts stops the runner in order.
    noHandleSignals: true,
    pollInterval: options.pollInterval ?? 1000,
    logger: workerLogger(options.log),
  });
  let timer: NodeJS.Timeout | undefined;
  const every = options.maintenanceIntervalMs;
  if (every !== undefined && every < 60_000) {
    const db = createDb(options.pool);
    timer = setInterval(() => {
      const add = async () => {
        const options = { jobKeyMode: 'preserve_run_at', maxAttempts: 1, priority: MAINTENANCE_PRIORITY } as const;
        await addJob(db, 'reconcile', {}, { ...options, jobKey: 'maintenance:reconcile' });
        await addJob(db, 'sweep', {}, { ...options, jobKey: 'maintenance:sweep' });
      };
      // the database may be restarting: the next tick tries again
      add().catch((err: unknown) => options.log.warn({ err: (err as Error).message }, 'maintenance tick failed'));
    }, every);
    timer.unref();
  }
  return {
    // Waits for the jobs in flight; graphile-worker releases the locks of any
    // it cannot finish so another worker picks them up.
    stop: () => {
      clearInterval(timer);
      return runner.stop();
    },
    done: runner.promise,
  };
}
