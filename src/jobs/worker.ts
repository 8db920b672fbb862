import { EventEmitter } from 'node:events';
import { type Runner, run, type TaskList, type WorkerEvents, Logger as WorkerLogger } from 'graphile-worker';
import type pg from 'pg';
import { sql } from 'kysely';
import { createDb, isConnectionLoss } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';
import { addJob } from './enqueue.ts';

export interface WorkerHandle {
  stop(): Promise<void>;
  /** Resolves when the worker has been stopped (its runner is started again if it ends on its own). */
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

/**
 * How long to wait before starting the job runner again after it ended on
 * its own (`failures` in a row): 1 s, doubling, at most 30 s.
 */
export function restartDelayMs(failures: number): number {
  return Math.min(30_000, 1_000 * 2 ** Math.max(0, failures - 1));
}
/** A runner that lived this long was healthy: the next restart waits the least again. */
const HEALTHY_RUN_MS = 60_000;

/**
 * The job worker: a graphile-worker runner, started again whenever it ends
 * on its own, so that a PostgreSQL restart does not end the process.
 *
 * graphile-worker 0.17 handles losing its database in two ways, both
 * seen when PostgreSQL restarts under a busy worker: its workers exit and
 * the runner ends; or the statement that records a finished job's
 * completion or failure fails, and since graphile-worker does not wait
 * for that statement, its rejection is unhandled, which ends a Node
 * process. (Its batched mode, `completeJobBatchDelay`, handles that error
 * but can then hang in its own shutdown.) Here a runner that ends is
 * started again, after 1 s, doubling up to 30 s while the database is
 * away; an unhandled rejection that is a lost connection stops the runner
 * so that it is started again; any other unhandled rejection still ends
 * the process.
 *
 * The jobs a dead runner held stay locked by its pool id (graphile-worker
 * frees such locks only after four hours): they are unlocked as soon as a
 * new runner is up. Running one of them again is safe: graphile-worker runs
 * a job at least once, and every task is written for that (a send job's
 * claim is one conditional UPDATE: a message is never claimed twice).
 */
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
  const { log } = options;
  const db = createDb(options.pool);
  const startRunner = async (): Promise<{ runner: Runner; poolIds: string[] }> => {
    const poolIds: string[] = [];
    const events: WorkerEvents = new EventEmitter();
    events.on('pool:create', ({ workerPool }) => poolIds.push(workerPool.id));
    const runner = await run({
      events,
      pgPool: options.pool,
      taskList: options.taskList,
      crontab: options.crontab ?? '',
      concurrency: options.concurrency,
      // Signals belong to the process: main.ts stops the runner in order.
      noHandleSignals: true,
      pollInterval: options.pollInterval ?? 1000,
      logger: workerLogger(log),
    });
    return { runner, poolIds };
  };

  let current = await startRunner();
  let stopping = false;
  let wake: (() => void) | undefined;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });

  const supervise = async (): Promise<void> => {
    let failures = 0;
    for (;;) {
      const started = Date.now();
      const ended = await current.runner.promise.then(
        () => undefined,
        (err: unknown) => err,
      );
      if (stopping) return;
      failures = Date.now() - started >= HEALTHY_RUN_MS ? 1 : failures + 1;
      const dead = current.poolIds;
      log.error({ err: ended, restartInMs: restartDelayMs(failures) }, 'the job runner ended on its own; starting it again');
      for (;;) {
        await pause(restartDelayMs(failures));
        if (stopping) return;
        try {
          const next = await startRunner();
          if (stopping) {
            // stop() came while this runner was starting: it has nothing else to stop
            await next.runner.stop().catch(() => {});
            return;
          }
          current = next;
          break;
        } catch (err) {
          failures++;
          log.warn({ err, restartInMs: restartDelayMs(failures) }, 'the job runner could not start; trying again');
        }
      }
      if (dead.length > 0) {
        await sql`select graphile_worker.force_unlock_workers(${dead}::text[])`
          .execute(db)
          .then(() => log.info({ workerPools: dead }, 'unlocked the jobs of the ended runner'))
          .catch((err: unknown) => log.warn({ err, workerPools: dead }, 'could not unlock the jobs of the ended runner; they wait for the sweep'));
      }
    }
  };
  const done = supervise();

  // A lost connection under graphile-worker's unawaited job-release
  // statement: restart the runner instead of dying (see above).
  const onUnhandled = (reason: unknown) => {
    if (!isConnectionLoss(reason)) throw reason;
    log.error({ err: reason }, 'a job could not be recorded as finished (database connection lost); restarting the job runner');
    if (!stopping) void current.runner.stop().catch(() => {});
  };
  process.on('unhandledRejection', onUnhandled);

  let timer: NodeJS.Timeout | undefined;
  const every = options.maintenanceIntervalMs;
  if (every !== undefined && every < 60_000) {
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
    stop: async () => {
      stopping = true;
      process.off('unhandledRejection', onUnhandled);
      clearInterval(timer);
      wake?.();
      await current.runner.stop().catch((err: unknown) => {
        // a runner that already ended (and is waiting to be started again) has nothing to stop
        log.debug({ err }, 'the job runner had already ended');
      });
      await done;
    },
    done,
  };
}
