import { randomBytes } from 'node:crypto';
import type { PostgresCursor, PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';
import type pg from 'pg';

/**
 * Named prepared statements for the statements a process runs again and
 * again. Kysely hands node-postgres unnamed statements, which PostgreSQL
 * parses and plans on every execution; for the send path's big statements
 * planning cost more than running them when batches are small (a 300/s
 * send run spent 18 s of PostgreSQL's 68 s planning). A text seen
 * `PREPARE_AFTER` times gets a name; node-postgres then parses it once per
 * connection, and PostgreSQL switches to a cached generic plan when that is
 * no worse than planning each time (its `plan_cache_mode = auto`).
 *
 * Bounded: at most `MAX_NAMED` texts per process are named (statements
 * built with a varying number of values stay unnamed once the budget is
 * spent), and the count of texts not named yet is forgotten when it grows
 * past `MAX_COUNTED`.
 *
 * A migration that changes a table under a running process makes
 * PostgreSQL refuse a prepared `select *` whose columns changed ("cached
 * plan must not change result type"): that statement fails once, and the
 * connection's names for it are renewed, so the next execution prepares it
 * afresh.
 */
export const PREPARE_AFTER = 3;
const MAX_NAMED = 300;
const MAX_COUNTED = 5_000;
/** SQLSTATE 0A000 with this message: the prepared statement's result columns changed. */
const RESULT_CHANGED = /cached plan must not change result type/;

export interface StatementNames {
  /** The name to prepare `text` under, or undefined to run it unnamed. */
  nameFor(text: string): string | undefined;
  /** How many texts have a name (for tests and diagnostics). */
  readonly named: number;
}

export function createStatementNames(): StatementNames {
  // names of their own: two sets of names may share a connection (two Kysely instances over one pool)
  const tag = randomBytes(4).toString('hex');
  const names = new Map<string, string>();
  const seen = new Map<string, number>();
  return {
    nameFor(text) {
      const name = names.get(text);
      if (name !== undefined) return name;
      if (names.size >= MAX_NAMED) return undefined;
      const count = (seen.get(text) ?? 0) + 1;
      if (count < PREPARE_AFTER) {
        if (seen.size >= MAX_COUNTED) seen.clear();
        seen.set(text, count);
        return undefined;
      }
      seen.delete(text);
      const fresh = `credence_${tag}_${names.size + 1}`;
      names.set(text, fresh);
      return fresh;
    },
    get named() {
      return names.size;
    },
  };
}

/**
 * Opening a transaction that plans its statements generically: one
 * round trip, as a plain `begin` (a simple-protocol query may hold several
 * statements). `set local` ends with the transaction.
 *
 * Sequential scans are off in these transactions. A generic plan is made
 * once per connection, with the table sizes of that moment, and kept until
 * an ANALYZE invalidates it: made while a table was young (a fresh
 * database, the first seconds of a benchmark) it scans the table, which
 * is then cheapest, and goes on scanning it as it grows. Every statement
 * of the send path finds its rows by key, so an index always serves it;
 * with sequential scans off the planner takes that index whatever the
 * size of the table when it planned (a status-callback batch read 1,900
 * pages of `messages` for six callbacks in a 500/s benchmark run).
 */
export const BEGIN_GENERIC = 'begin; set local plan_cache_mode = force_generic_plan; set local enable_seqscan = off';

export interface PoolOptions {
  /** The names of frequent statements (default: a set of its own). */
  names?: StatementNames;
  /**
   * Transactions plan their statements once per connection and reuse the
   * plan (`plan_cache_mode = force_generic_plan`), instead of planning them
   * anew at each execution with the values of that execution. For the send
   * path's transactions only: their statements' plans are checked with
   * `EXPLAIN (GENERIC_PLAN)` by `test/plans.generic.test.ts`. A generic
   * plan cannot use a partial index whose predicate only a parameter's value
   * would prove, so statuses in those statements are written as literals.
   */
  genericPlans?: boolean;
}

/**
 * A pool for Kysely whose clients run frequent statements as named prepared
 * statements, and, with `genericPlans`, open transactions that plan
 * generically.
 */
export function preparingPool(pool: pg.Pool, options: PoolOptions = {}): PostgresPool {
  const names = options.names ?? createStatementNames();
  const begin = options.genericPlans === true ? BEGIN_GENERIC : undefined;
  // per connection: a suffix renewed when PostgreSQL refuses a statement prepared before a migration
  const generations = new WeakMap<pg.PoolClient, number>();
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      const run = async <R>(text: string, parameters: readonly unknown[]): Promise<PostgresQueryResult<R>> => {
        if (begin !== undefined && text === 'begin') {
          try {
            // two statements, two results: Kysely reads the first, as it would for `begin`
            const results = (await client.query(begin)) as unknown as PostgresQueryResult<R>[];
            return results[0]!;
          } catch (err) {
            // `begin` may have run and `set local` failed (a cancel between them): Kysely
            // does not roll back a transaction it never saw begin, so the connection would
            // go back to the pool inside a failed transaction
            await client.query('rollback').catch(() => {});
            throw err;
          }
        }
        const values = [...parameters];
        const name = names.nameFor(text);
        if (name === undefined) return (await client.query(text, values)) as unknown as PostgresQueryResult<R>;
        const generation = generations.get(client) ?? 0;
        try {
          return (await client.query({ name: generation === 0 ? name : `${name}_${generation}`, text, values })) as unknown as PostgresQueryResult<R>;
        } catch (err) {
          if (RESULT_CHANGED.test((err as Error).message)) generations.set(client, generation + 1);
          throw err;
        }
      };
      function query<R>(sql: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>>;
      function query<R>(cursor: PostgresCursor<R>): PostgresCursor<R>;
      function query<R>(
        first: string | PostgresCursor<R>,
        parameters?: ReadonlyArray<unknown>,
      ): Promise<PostgresQueryResult<R>> | PostgresCursor<R> {
        if (typeof first === 'string') return run<R>(first, parameters ?? []);
        return client.query(first as unknown as pg.Submittable) as unknown as PostgresCursor<R>;
      }
      return { query, release: () => client.release() };
    },
    end: () => pool.end(),
  };
}
