import type { TaskList } from 'graphile-worker';
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
export function buildTaskList(_deps: TaskDeps): TaskList {
  return {};
}

export const CRONTAB = '';
