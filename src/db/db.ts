import { Kysely, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
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

export function createDb(pool: pg.Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}
