import { type Runner, run, type TaskList, Logger as WorkerLogger } from 'graphile-worker';
import type pg from 'pg';
import type { Logger } from '../shared/logger.ts';

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

export async function startWorker(options: {
  pool: pg.Pool;
  taskList: TaskList;
  crontab?: string;
  concurrency: number;
  log: Logger;
  pollInterval?: number;
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
  return {
    // Waits for the jobs in flight; graphile-worker releases the locks of any
    // it cannot finish so another worker picks them up.
    stop: () => runner.stop(),
    done: runner.promise,
  };
}
