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
 * meanwhile. Workers in several processes split the work with SKIP LOCKED.
 * Missed notifications are covered by the `sweep` job every minute.
 */
export async function notifyDispatch(trx: DbOrTx, organizationId: string): Promise<void> {
  await sql`select pg_notify(${CHANNEL}, ${organizationId})`.execute(trx);
}

export interface Dispatcher {
  stop(): Promise<void>;
}

export async function startDispatcher(options: { pool: pg.Pool; db: Db; log: Logger; gatherMs?: number }): Promise<Dispatcher> {
  const { pool, db, log } = options;
  const running = new Map<string, Promise<void>>();
  const again = new Set<string>();
  let client: pg.PoolClient | undefined;
  let stopped = false;
  let reconnect: NodeJS.Timeout | undefined;

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
    try {
      const c = await pool.connect();
      c.on('notification', (msg) => {
        if (msg.channel === CHANNEL && msg.payload) run(msg.payload);
      });
      c.on('error', (err) => {
        log.warn({ err }, 'dispatch listener lost its connection; reconnecting');
        c.release(err);
        client = undefined;
        if (!stopped) reconnect = setTimeout(() => void listen(), 1_000);
      });
      await c.query(`LISTEN ${CHANNEL}`);
      client = c;
    } catch (err) {
      log.warn({ err }, 'dispatch listener could not connect; retrying');
      if (!stopped) reconnect = setTimeout(() => void listen(), 1_000);
    }
  };
  await listen();

  return {
    stop: async () => {
      stopped = true;
      clearTimeout(reconnect);
      if (client) {
        await client.query(`UNLISTEN ${CHANNEL}`).catch(() => {});
        client.release();
        client = undefined;
      }
      await Promise.allSettled([...running.values()]);
    },
  };
}
