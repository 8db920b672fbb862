import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../src/db/db.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../src/db/embedded.ts';
import { restartDelayMs } from '../src/jobs/worker.ts';
import { createLogger } from '../src/shared/logger.ts';
import { eventually } from './helpers/pipeline.ts';
import { freePort } from './helpers/ports.ts';
import { killAllSpawned, type Spawned, spawnCredence } from './helpers/process.ts';

/** A worker that never reaches a carrier: these tests are about its database, not its sends. */
const WORKER_ONLY = {
  LOG_LEVEL: 'info',
  TWILIO_ACCOUNT_SID: `AC${'0'.repeat(32)}`,
  TWILIO_AUTH_TOKEN: 'x'.repeat(32),
  TWILIO_API_URL: 'http://127.0.0.1:9',
  PUBLIC_URL: 'http://127.0.0.1:8',
};

describe('restarting the job runner', () => {
  it('waits 1 s, doubling, at most 30 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map(restartDelayMs)).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
  });
});

/**
 * A `credence worker` process busy with jobs while its PostgreSQL is
 * stopped (sessions aborted) and started again: graphile-worker loses the
 * statements that record finished jobs, and before the runner was
 * supervised the process died of the unhandled rejection (or its runner
 * ended). It must stay up, start its runner again, free the jobs the dead
 * runner held, and finish every job. A second worker started while the
 * server is down (its Unix socket gone) must wait for it, not exit.
 */
describe('workers whose database restarts', () => {
  let home: string;
  let server: EmbeddedPostgres;
  let pool: pg.Pool;
  let pgDir: string;
  let port: number;
  const quiet = createLogger('error');

  beforeAll(async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-restart-'));
    await fs.chmod(home, 0o755); // the server runs as another user when the tests run as root
    pgDir = path.join(home, 'pg');
    port = await freePort();
    server = await startEmbeddedPostgres({ dir: pgDir, port, log: quiet });
  }, 120_000);
  afterAll(async () => {
    await killAllSpawned();
    await pool?.end().catch(() => {});
    await server?.stop('fast');
    await fs.rm(home, { recursive: true, force: true });
  });

  it('one busy stays up and starts its job runner again, one started meanwhile waits; every job done, none left locked', async () => {
    const env = {
      CREDENCE_HOME: home,
      DATABASE_URL: server.url,
      ...WORKER_ONLY,
      MAINTENANCE_INTERVAL_MS: '1000',
    };
    const worker: Spawned = spawnCredence(['worker'], env);
    await worker.waitFor(/Credence is running/);
    pool = createPool(server.url, 2);
    // Real tasks, short and many, so that jobs are in flight whatever the moment of the stop.
    await pool.query(`select graphile_worker.add_job('sweep', '{}'::json) from generate_series(1, 6000)`);
    await eventually(async () => {
      const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from graphile_worker._private_jobs');
      return rows[0]!.n < 5_500 ? true : undefined;
    }, 30_000, 'the worker busy with the jobs');
    await pool.end();

    await server.stop('fast');
    // A second worker started while the server is down (its Unix socket is gone) waits for it.
    const late = spawnCredence(['worker'], env);
    await late.waitFor(/waiting for PostgreSQL/, 30_000);
    await new Promise((r) => setTimeout(r, 2_500));
    server = await startEmbeddedPostgres({ dir: pgDir, port, log: quiet });
    await late.waitFor(/Credence is running/, 60_000);
    pool = createPool(server.url, 2);

    const left = await eventually(
      async () => {
        const { rows } = await pool.query<{ n: number; locked: number }>(
          'select count(*)::int as n, (count(*) filter (where locked_by is not null))::int as locked from graphile_worker._private_jobs',
        );
        // thrown, not undefined: a timeout then says how many are left, how many locked, and what they are
        if (rows[0]!.n !== 0) {
          const { rows: some } = await pool.query<{ job: string }>(
            `select concat_ws(' ', t.identifier, 'attempts ' || j.attempts || '/' || j.max_attempts, 'run_at ' || j.run_at, 'key ' || j.key,
               'locked ' || (j.locked_by is not null), 'error ' || left(j.last_error, 120)) as job
             from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id order by j.id limit 3`,
          );
          throw new Error(`${rows[0]!.n} jobs left, ${rows[0]!.locked} of them locked: ${some.map((r) => r.job).join('; ')}`);
        }
        return rows[0];
      },
      90_000,
      'every job done',
    );
    expect(left).toEqual({ n: 0, locked: 0 });
    expect(worker.child.exitCode).toBeNull();
    expect(worker.child.signalCode).toBeNull();
    // One more job after the restart, to see the runner take new work (not only its backlog).
    await pool.query(`select graphile_worker.add_job('sweep', '{}'::json, job_key := 'after-restart')`);
    await eventually(async () => {
      const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from graphile_worker._private_jobs');
      return rows[0]!.n === 0 ? true : undefined;
    }, 30_000, 'a job added after the restart');

    expect(late.child.exitCode).toBeNull();
    worker.child.kill('SIGTERM');
    late.child.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    expect((await late.exited).code).toBe(0);
  }, 240_000);
});

/**
 * `credence start` and the roles without DATABASE_URL own an embedded
 * PostgreSQL: if it dies (killed, out of memory), the process must say so
 * and exit 1 rather than stay up answering 503 and retrying forever (its
 * job runner now survives a lost database, so nothing else would end it).
 */
describe('a process whose own embedded PostgreSQL dies', () => {
  let home: string;
  beforeAll(async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-pgdies-'));
    await fs.chmod(home, 0o755);
  });
  afterAll(async () => {
    await killAllSpawned();
    await fs.rm(home, { recursive: true, force: true });
  });

  it('exits 1, naming it', async () => {
    const worker = spawnCredence(['worker'], {
      CREDENCE_HOME: home,
      EMBEDDED_PG_PORT: String(await freePort()),
      ...WORKER_ONLY,
    });
    await worker.waitFor(/Credence is running/, 120_000);
    const postmaster = Number((await fs.readFile(path.join(home, 'pgdata', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    expect(postmaster).toBeGreaterThan(0);
    process.kill(postmaster, 'SIGKILL');
    const exit = await Promise.race([worker.exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 60_000))]);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(worker.output()).toMatch(/embedded PostgreSQL \(pid \d+\) exited on its own/);
  }, 180_000);
});
