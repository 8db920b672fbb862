import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { sql } from 'kysely';
import type { Db, DbOrTx } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';
import { dispatchOrganization } from './dispatch.ts';

export const DISPATCH_CHANNEL = 'credence_dispatch';
const CHANNEL = DISPATCH_CHANNEL;

/**
 * The fast path from intake to dispatch. An intake transaction notifies the
 * organization's id on commit (NOTIFY is transactional and holds no row
 * lock, unlike a shared job row that every request would update); each
 * worker process listens and dispatches that organization, at most one run
 * at a time per organization and process, with one more run if notified
 * meanwhile. Runs in several processes take an organization's batches in
 * turn (dispatch.ts, lockOrganizationDispatch).
 * Missed notifications are covered by the `sweep` job every minute.
 */
export async function notifyDispatch(trx: DbOrTx, organizationId: string): Promise<void> {
  await sql`select pg_notify(${CHANNEL}, ${organizationId})`.execute(trx);
}

/**
 * Wake dispatchers after commit, coalesced: one NOTIFY statement per process
 * every few milliseconds for all organizations that got new messages, not one
 * per request. PostgreSQL serialises the commits of notifying transactions
 * (a global lock held through the WAL flush), so a NOTIFY inside every intake
 * transaction capped intake at one fsync per message. Sent after the intake
 * committed: a wake-up lost to a crash in between is covered by the sweep.
 */
const wakers = new WeakMap<DbOrTx, { orgs: Set<string>; timer: NodeJS.Timeout | undefined }>();
export const WAKE_COALESCE_MS = 5;

export function wakeDispatcher(db: DbOrTx, organizationId: string): void {
  let w = wakers.get(db);
  if (w === undefined) {
    w = { orgs: new Set(), timer: undefined };
    wakers.set(db, w);
  }
  w.orgs.add(organizationId);
  if (w.timer !== undefined) return;
  const waker = w;
  waker.timer = setTimeout(() => {
    const orgs = [...waker.orgs];
    waker.orgs.clear();
    waker.timer = undefined;
    sql`select pg_notify(${CHANNEL}, o) from unnest(${orgs}::text[]) o`.execute(db).catch(() => {
      // the pool is closing, or the database is away: the sweep picks these up
    });
  }, WAKE_COALESCE_MS);
  waker.timer.unref();
}

export interface Dispatcher {
  stop(): Promise<void>;
}

/** A listening connection; `released` once it went back to the pool. */
interface Listening {
  c: pg.PoolClient;
  released: boolean;
}

export async function startDispatcher(options: { pool: pg.Pool; db: Db; log: Logger; gatherMs?: number }): Promise<Dispatcher> {
  const { pool, db, log } = options;
  const running = new Map<string, Promise<void>>();
  const again = new Set<string>();
  // a connection can emit several errors, and stop() may race with one: it is
  // released exactly once, or pg-pool throws an uncaught exception
  let client: Listening | undefined;
  let stopped = false;
  let reconnect: NodeJS.Timeout | undefined;

  const release = (conn: Listening, err?: Error): void => {
    if (conn.released) return;
    conn.released = true;
    conn.c.release(err);
    if (client === conn) client = undefined;
  };
  const retry = (): void => {
    if (stopped) return;
    clearTimeout(reconnect);
    reconnect = setTimeout(() => void listen(), 1_000);
  };

  const run = (org: string): void => {
    if (stopped) return;
    if (running.has(org)) {
      again.add(org);
      return;
    }
    // A short gathering window turns a burst of single messages into one
    // batch: one ledger reservation and one send job instead of hundreds.
    const task = sleep(options.gatherMs ?? 25)
      .then(() => dispatchOrganization(db, org))
      .then((r) => {
        if (r.batches > 0) log.debug({ organization_id: org, ...r }, 'dispatched');
      })
      .catch((err: unknown) => log.warn({ organization_id: org, err }, 'dispatch failed; the sweep will retry'))
      .finally(() => {
        running.delete(org);
        if (again.delete(org)) run(org);
      });
    running.set(org, task);
  };

  const listen = async (): Promise<void> => {
    let conn: Listening | undefined;
    try {
      const c = await pool.connect();
      const mine: Listening = { c, released: false };
      conn = mine;
      c.on('notification', (msg) => {
        if (msg.channel === CHANNEL && msg.payload) run(msg.payload);
      });
      c.on('error', (err) => {
        if (mine.released) return;
        log.warn({ err }, 'dispatch listener lost its connection; reconnecting');
        release(mine, err);
        retry();
      });
      await c.query(`LISTEN ${CHANNEL}`);
      if (mine.released) return; // lost while listening: its error handler retries
      if (stopped) return release(mine);
      client = mine;
    } catch (err) {
      log.warn({ err }, 'dispatch listener could not connect; retrying');
      if (conn !== undefined) release(conn, err as Error);
      retry();
    }
  };
  await listen();

  return {
    stop: async () => {
      stopped = true;
      clearTimeout(reconnect);
      const conn = client;
      if (conn) {
        await conn.c.query(`UNLISTEN ${CHANNEL}`).catch(() => {});
        release(conn);
      }
      await Promise.allSettled([...running.values()]);
    },
  };
}
