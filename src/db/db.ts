import { Kysely, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
import { preparingPool } from './prepared.ts';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;
/** Either the pool-backed instance or an open transaction. */
export type DbOrTx = Kysely<Database>;

const INT8_OID = 20;

/**
 * `pg` returns int8 as a string so it cannot lose precision. Credits and
 * counts are integers far below 2^53, so we parse them as numbers, and refuse
 * (loudly) anything that would not round-trip.
 */
function parseInt8(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n))
    throw new Error(`int8 value ${value} exceeds the safe integer range`);
  return n;
}

const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID && format !== 'binary') return parseInt8;
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

export function createPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max, types, application_name: 'credence' });
  // An idle client losing its connection (server restart) must not crash the process.
  // (graphile-worker adds its own logging listeners; these keep the process alive without it.)
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/**
 * Kysely over the pool; frequent statements become named prepared
 * statements unless `prepare` is false; with `genericPlans`, transactions
 * reuse one plan per statement (the send path's `Db`: see prepared.ts).
 * Without prepared statements there is no plan to reuse (an unnamed
 * statement is planned at each execution either way), so `genericPlans`
 * then does nothing. Several may share one pool; destroy only one of them
 * (it ends the pool).
 */
export function createDb(pool: pg.Pool, options: { prepare?: boolean; genericPlans?: boolean } = {}): Db {
  const wrapped = options.prepare === false ? pool : preparingPool(pool, { genericPlans: options.genericPlans === true });
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool: wrapped }) });
}

/** Errors that mean "the server is not there yet" (restarting, starting up), not "you may not". */
const TRANSIENT_CONNECT = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', '57P01', '57P02', '57P03']);

/** The SQLSTATE (or Node error code) of an error, if it has one. */
export const codeOf = (err: unknown): string | undefined => {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
};

/** SQLSTATEs after which the whole transaction rolled back and may simply run again: deadlock, serialization failure. */
const ROLLED_BACK_WHOLE = new Set(['40P01', '40001']);

/** PostgreSQL rolled the failed transaction back whole (deadlock, serialization failure): it may simply run again. */
export const rolledBackWhole = (err: unknown): boolean => {
  const code = codeOf(err);
  return code !== undefined && ROLLED_BACK_WHOLE.has(code);
};

/**
 * A transaction run again (up to `tries` times in all) when PostgreSQL rolled
 * it back whole for a deadlock or a serialization failure. For the short,
 * user-facing transactions that lock many message rows (a campaign's pause,
 * cancel): an outcome step locks its batch's rows in its own order, and when
 * the two meet PostgreSQL aborts one after deadlock_timeout; the user's
 * action then waits a second instead of failing with a 500.
 */
export async function transactionRetrying<T>(db: Db, fn: (trx: Tx) => Promise<T>, tries = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction().execute(fn);
    } catch (err) {
      if (!rolledBackWhole(err) || attempt >= tries) throw err;
    }
  }
}

/**
 * The server is not there (yet): stopped, starting up, shutting down, or
 * nothing listening on its port or at its Unix socket. Waiting may mend it;
 * a wrong password or a missing database is not this.
 */
export function isServerAway(err: unknown): boolean {
  const code = codeOf(err);
  if (code === undefined) return false;
  // A Unix socket that is gone while the server is down (any other missing file is not this).
  if (code === 'ENOENT') return /\.s\.PGSQL\.\d+/.test((err as Error).message);
  return TRANSIENT_CONNECT.has(code);
}

/** Connection exceptions (class 08) and network errors besides those of `isServerAway`. */
const CONNECTION_LOST = new Set(['08000', '08001', '08003', '08006', 'ETIMEDOUT', 'EHOSTUNREACH']);

/**
 * An error that says the database connection is gone or cannot be made
 * (PostgreSQL stopping, restarting or unreachable, or a session cut off
 * mid-statement), as opposed to a fault in the code or a refusal.
 */
export function isConnectionLoss(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (isServerAway(err) || CONNECTION_LOST.has(codeOf(err) ?? '')) return true;
  // pg's own errors for a session whose socket closed carry no code
  return /Connection terminated|connection error and is not queryable|Client was closed/i.test(err.message);
}

/**
 * Wait until PostgreSQL answers, for a process started while its database
 * restarts: up to `timeoutMs`, retrying only errors that mean the server is
 * not there yet; a bad password or a missing database fails at once.
 */
export async function waitForDatabase(pool: pg.Pool, timeoutMs: number, onWait?: (reason: string) => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    try {
      await pool.query('select 1');
      return;
    } catch (err) {
      if (!isServerAway(err) || Date.now() >= deadline) throw err;
      if (!told) onWait?.((err as Error).message);
      told = true;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
