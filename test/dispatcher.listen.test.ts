import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DISPATCH_CHANNEL, type Dispatcher, startDispatcher } from '../src/messaging/dispatcher.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { eventually } from './helpers/pipeline.ts';

let tdb: TestDatabase;
let dispatcher: Dispatcher | undefined;

beforeAll(async () => {
  tdb = await createTestDatabase();
});

afterAll(async () => {
  await dispatcher?.stop();
  await tdb?.close();
});

/** The backends listening for dispatch wake-ups (their last statement was the LISTEN). */
async function listeners(): Promise<number[]> {
  const { rows } = await tdb.pool.query<{ pid: number }>(
    `select pid from pg_stat_activity where datname = current_database() and query = $1 and pid <> pg_backend_pid()`,
    [`LISTEN ${DISPATCH_CHANNEL}`],
  );
  return rows.map((r) => r.pid);
}

describe('the dispatcher listener', () => {
  it('survives its connection being killed: released once (a second error used to throw out of the process), then listens again', async () => {
    dispatcher = await startDispatcher({ pool: tdb.pool, db: tdb.db, log: createLogger('error') });
    const [first] = await eventually(async () => ((await listeners()).length === 1 ? listeners() : undefined), 5_000, 'the listener');
    // the server ends the session: the client gets the FATAL error, then the closed socket
    await tdb.pool.query('select pg_terminate_backend($1)', [first]);
    const again = await eventually(
      async () => {
        const now = await listeners();
        return now.length === 1 && now[0] !== first ? now : undefined;
      },
      10_000,
      'a new listener',
    );
    expect(again).toHaveLength(1);
    await dispatcher.stop();
    dispatcher = undefined;
    await eventually(async () => ((await listeners()).length === 0 ? true : undefined), 5_000, 'no listener after stop');
  });
});
