import type { Carrier } from '../src/carriers/index.ts';
import type { Task } from 'graphile-worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addJob, startWorker, type WorkerHandle } from '../src/jobs/index.ts';
import { silentLog } from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

let tdb: TestDatabase;
let worker: WorkerHandle;
const ran: string[] = [];
let notify: (() => void) | undefined;

beforeAll(async () => {
  tdb = await createTestDatabase();
  const record: Task = async (payload) => {
    ran.push((payload as { tag: string }).tag);
    notify?.();
  };
  worker = await startWorker({
    pool: tdb.pool,
    taskList: { record },
    concurrency: 2,
    log: silentLog,
    pollInterval: 100,
  });
});
afterAll(async () => {
  await worker.stop();
  await tdb.close();
});

async function jobCount(tag: string): Promise<number> {
  const { rows } = await tdb.pool.query<{ n: number }>(
    "select count(*)::int as n from graphile_worker._private_jobs where payload->>'tag' = $1",
    [tag],
  );
  return rows[0]!.n;
}

describe('jobs are added in the same transaction as the change that causes them', () => {
  it('a job added in a transaction that rolls back never exists and never runs', async () => {
    await expect(
      tdb.db.transaction().execute(async (trx) => {
        await addJob(trx, 'record', { tag: 'rolled-back' });
        await trx
          .insertInto('organizations')
          .values({ id: 'org_ROLLEDBACK0000000000000000', name: 'x' })
          .execute();
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect(await jobCount('rolled-back')).toBe(0);

    // A committed job added afterwards runs, proving the worker was live the whole time.
    const done = new Promise<void>((resolve) => {
      notify = () => ran.includes('committed') && resolve();
    });
    await tdb.db.transaction().execute(async (trx) => {
      await addJob(trx, 'record', { tag: 'committed' });
    });
    await done;
    expect(ran).toContain('committed');
    expect(ran).not.toContain('rolled-back');
    const org = await tdb.db
      .selectFrom('organizations')
      .select('id')
      .where('id', '=', 'org_ROLLEDBACK0000000000000000')
      .execute();
    expect(org).toEqual([]);
  });

  it('a job key replaces a pending job instead of adding a second one', async () => {
    const later = new Date(Date.now() + 3_600_000);
    await addJob(tdb.db, 'record', { tag: 'keyed' }, { jobKey: 'same', runAt: later });
    await addJob(tdb.db, 'record', { tag: 'keyed' }, { jobKey: 'same', runAt: later });
    expect(await jobCount('keyed')).toBe(1);
  });
});

const unusedCarrier: Carrier = {
  accountId: 'none',
  send: () => Promise.reject(new Error('not used')),
  fetchMessage: () => Promise.reject(new Error('not used')),
  findMessages: () => Promise.reject(new Error('not used')),
  validateWebhook: () => false,
};

/** A worker with Credence's real task list (and optionally its crontab); no message in this database reaches the carrier. */
async function startRealWorker(crontab?: string): Promise<WorkerHandle> {
  const { buildTaskList } = await import('../src/jobs/index.ts');
  return startWorker({
    pool: tdb.pool,
    taskList: buildTaskList({
      db: tdb.db,
      log: silentLog,
      send: { db: tdb.db, carrier: unusedCarrier, publicUrl: 'http://localhost', log: silentLog, breakers: new Map() },
    }),
    ...(crontab !== undefined && { crontab }),
    concurrency: 1,
    log: silentLog,
    pollInterval: 100,
  });
}

describe('the hourly ledger verification job', () => {
  it('runs through the worker and records its result for /metrics', async () => {
    const { CRONTAB } = await import('../src/jobs/index.ts');
    expect(CRONTAB).toMatch(/^0 \* \* \* \* ledger_verify/m);
    const real = await startRealWorker(CRONTAB);
    try {
      await addJob(tdb.db, 'ledger_verify', {});
      const deadline = Date.now() + 20_000;
      let rows: { mismatches: number }[] = [];
      while (rows.length === 0 && Date.now() < deadline) {
        rows = (await tdb.pool.query<{ mismatches: number }>('select mismatches from ledger_verifications')).rows;
        if (rows.length === 0) await new Promise((r) => setTimeout(r, 100));
      }
      expect(rows).toEqual([{ mismatches: 0 }]);
    } finally {
      await real.stop();
    }
  });
});

/**
 * The state a CI run of the database-loss test once ended in ("1 jobs left,
 * 0 of them locked"): a maintenance job taken by a job runner that died,
 * unlocked with its one attempt spent, its key handed to a fresh copy.
 * graphile-worker keeps it for good; the sweep deletes it.
 */
describe('a periodic job whose job runner died while it ran', () => {
  it('is deleted by the sweep; a spent job of any other task is kept', async () => {
    const { CRONTAB, PERIODIC_TASKS } = await import('../src/jobs/index.ts');
    expect([...PERIODIC_TASKS].sort()).toEqual(['ledger_verify', 'reconcile', 'sweep']);
    expect(CRONTAB).toMatch(/^\* \* \* \* \* sweep \?max=1/m);
    // as startWorker's maintenance tick adds it
    const tick = () => addJob(tdb.db, 'reconcile', {}, { jobKey: 'maintenance:reconcile', jobKeyMode: 'preserve_run_at', maxAttempts: 1, priority: -10 });
    await tick();
    // taken by a runner (graphile-worker counts the attempt when it locks the job) that then dies
    await tdb.pool.query(
      "update graphile_worker._private_jobs set attempts = attempts + 1, locked_at = now(), locked_by = 'dead-runner' where key = 'maintenance:reconcile'",
    );
    await tick(); // the key moves to a fresh copy
    await tdb.pool.query("select graphile_worker.force_unlock_workers(array['dead-runner'])");
    // a job of another task that failed for good is not the sweep's to delete
    await addJob(tdb.db, 'campaign_check', { campaignId: 'cmp_spent' }, { maxAttempts: 1 });
    await tdb.pool.query("update graphile_worker._private_jobs set attempts = 1, last_error = 'kept' where payload->>'campaignId' = 'cmp_spent'");
    const jobs = async () =>
      (
        await tdb.pool.query<{ task: string; attempts: number; key: string | null; locked: boolean }>(
          `select t.identifier as task, j.attempts, j.key, j.locked_at is not null as locked
           from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
           where t.identifier <> 'record' order by j.id`, // 'record': the tests above
        )
      ).rows;
    expect(await jobs()).toEqual([
      { task: 'reconcile', attempts: 1, key: null, locked: false }, // spent: never run again
      { task: 'reconcile', attempts: 0, key: 'maintenance:reconcile', locked: false },
      { task: 'campaign_check', attempts: 1, key: null, locked: false },
    ]);

    const real = await startRealWorker();
    try {
      await addJob(tdb.db, 'sweep', {});
      const deadline = Date.now() + 20_000;
      let left = await jobs();
      while (left.length !== 1 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        left = await jobs();
      }
      // the fresh reconcile and the sweep ran and were removed as done; the spent copy was deleted
      expect(left).toEqual([{ task: 'campaign_check', attempts: 1, key: null, locked: false }]);
    } finally {
      await real.stop();
      await tdb.pool.query("delete from graphile_worker._private_jobs where payload->>'campaignId' = 'cmp_spent'");
    }
  });
});
