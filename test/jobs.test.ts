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

describe('the hourly ledger verification job', () => {
  it('runs through the worker and records its result for /metrics', async () => {
    const { buildTaskList, CRONTAB } = await import('../src/jobs/index.ts');
    expect(CRONTAB).toMatch(/^0 \* \* \* \* ledger_verify/m);
    const real = await startWorker({
      pool: tdb.pool,
      taskList: buildTaskList({
        db: tdb.db,
        log: silentLog,
        // this test only runs ledger_verify; the send deps are never reached
        send: { db: tdb.db, carrier: unusedCarrier, publicUrl: 'http://localhost', log: silentLog, breakers: new Map() },
      }),
      crontab: CRONTAB,
      concurrency: 1,
      log: silentLog,
      pollInterval: 100,
    });
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
