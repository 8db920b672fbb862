import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTaskList, RECONCILE_LOCK } from '../src/jobs/index.ts';
import { dispatchOrganization } from '../src/messaging/index.ts';
import { silentLog } from './helpers/app.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * Reconciliation runs one at a time under a PostgreSQL session lock, so a
 * worker that dies while reconciling releases it with its connection. (A
 * graphile-worker named queue stayed locked for hours after a SIGKILL, and
 * reconciliation with it: found by the chaos run.)
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline({ withWorker: false });
  await grantCredits(p, 10);
});
afterAll(async () => {
  await p?.close();
});

describe('reconciliation lock', () => {
  it('waits while another live session reconciles, and runs once that session dies', async () => {
    const sent = await sendViaApi(p, { to: '+14155550190', body: 'Your table is ready.' });
    const id = sent.json.id as string;
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    expect((await message(p, id)).status).toBe('queued');
    // a worker claimed it a minute ago and died before the carrier call
    await sql`update messages set status = 'sending', attempts = 1, claimed_at = now() - interval '1 minute',
      lease_until = now() - interval '30 seconds' where id = ${id}`.execute(p.tdb.db);

    const reconcile = buildTaskList({ db: p.tdb.db, log: silentLog, send: p.sendDeps }).reconcile!;
    const holder = await p.tdb.pool.connect();
    try {
      await holder.query('select pg_advisory_lock($1)', [RECONCILE_LOCK]);
      await reconcile({}, {} as never);
      expect((await message(p, id)).status, 'another session holds the lock: nothing done').toBe('sending');

      // that session's process dies: PostgreSQL ends its session, and the lock with it
      const { rows } = await holder.query<{ pid: number }>('select pg_backend_pid() as pid');
      await sql`select pg_terminate_backend(${rows[0]!.pid})`.execute(p.tdb.db);
    } finally {
      holder.release(true);
    }
    const lockHeld = async () =>
      (await sql<{ n: number }>`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = ${RECONCILE_LOCK}`.execute(p.tdb.db)).rows[0]!.n;
    await eventually(async () => ((await lockHeld()) === 0 ? true : undefined), 5_000, 'the dead session to end');
    await reconcile({}, {} as never);
    const after = await message(p, id);
    expect(after.status, 'not at the carrier: queued again').toBe('queued');
    expect(after.status_reason).toBe('not_at_carrier');
    expect(await lockHeld(), 'the task let go of the lock').toBe(0);
  });
});
