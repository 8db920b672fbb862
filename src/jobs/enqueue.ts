import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';

export interface JobOptions {
  runAt?: Date;
  maxAttempts?: number;
  /** Replaces a pending job with the same key instead of adding a second one. */
  jobKey?: string;
  jobKeyMode?: 'replace' | 'preserve_run_at' | 'unsafe_dedupe';
  queueName?: string;
  priority?: number;
}

/**
 * Add a graphile-worker job inside the caller's transaction: the job exists
 * if and only if the state change that caused it commits (no dual write).
 */
export async function addJob(
  db: DbOrTx,
  identifier: string,
  payload: unknown,
  options: JobOptions = {},
): Promise<void> {
  await sql`select graphile_worker.add_job(
      identifier => ${identifier},
      payload => ${JSON.stringify(payload ?? {})}::json,
      queue_name => ${options.queueName ?? null}::text,
      run_at => ${options.runAt ?? null}::timestamptz,
      max_attempts => ${options.maxAttempts ?? null}::int,
      job_key => ${options.jobKey ?? null}::text,
      priority => ${options.priority ?? null}::int,
      job_key_mode => ${options.jobKey === undefined ? null : (options.jobKeyMode ?? 'replace')}::text
    )`.execute(db);
}
