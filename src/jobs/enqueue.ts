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

/**
 * Add many jobs of one task in one statement (graphile-worker's add_jobs),
 * inside the caller's transaction. No job keys: for those, addJob.
 */
export async function addJobs(
  db: DbOrTx,
  identifier: string,
  payloads: readonly unknown[],
  options: Pick<JobOptions, 'runAt' | 'maxAttempts' | 'priority'> = {},
): Promise<void> {
  if (payloads.length === 0) return;
  await sql`select count(*) from graphile_worker.add_jobs(array(
      select row(${identifier}, p, null, ${options.runAt ?? null}::timestamptz, ${options.maxAttempts ?? null}::int, null, ${options.priority ?? null}::int, null)::graphile_worker.job_spec
      from json_array_elements(${JSON.stringify(payloads.map((p) => p ?? {}))}::json) as p
    ))`.execute(db);
}
