import { Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/schema.ts';
import { createDb } from '../src/db/db.ts';
import { createStatementNames, PREPARE_AFTER, preparingPool } from '../src/db/prepared.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

/**
 * Frequent statements run as named prepared statements (src/db/prepared.ts):
 * the same answers as unnamed ones, a bounded set of names, and a statement
 * prepared before a migration changed its table recovers after one failure.
 */
let tdb: TestDatabase;

beforeAll(async () => {
  tdb = await createTestDatabase({ poolSize: 1 });
});
afterAll(async () => {
  await tdb?.close();
});

/** Prepared statements this session holds, by text (one connection: the pool has one). */
async function preparedTexts(db: Kysely<Database>): Promise<string[]> {
  const { rows } = await sql<{ statement: string }>`select statement from pg_prepared_statements where from_sql = false`.execute(db);
  return rows.map((r) => r.statement);
}

describe('named prepared statements', () => {
  it(`a text run ${PREPARE_AFTER} times is prepared once on the connection, and answers as before`, async () => {
    const names = createStatementNames();
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: preparingPool(tdb.pool, { names }) }) });
    const answers: number[] = [];
    for (let i = 1; i <= PREPARE_AFTER + 3; i++) {
      const { rows } = await sql<{ n: number }>`select ${i}::int * 2 as n`.execute(db);
      answers.push(rows[0]!.n);
    }
    expect(answers).toEqual([2, 4, 6, 8, 10, 12]);
    expect(names.named).toBe(1);
    expect((await preparedTexts(db)).filter((t) => t.includes('* 2 as n'))).toHaveLength(1);
  });

  it('names at most a bounded number of texts; the rest run unnamed, with the right answers', () => {
    const names = createStatementNames();
    const given = new Set<string>();
    for (let i = 0; i < 1_000; i++) {
      for (let k = 0; k < PREPARE_AFTER; k++) {
        const name = names.nameFor(`select ${i}`);
        if (name !== undefined) given.add(name);
      }
    }
    expect(names.named).toBeLessThan(1_000);
    expect(given.size).toBe(names.named);
    // a text named earlier keeps its name
    const first = names.nameFor('select 0');
    expect(first).toMatch(/^credence_[0-9a-f]{8}_1$/);
    expect(names.nameFor('select 0')).toBe(first);
  });

  it('a select * prepared before a column is added fails once, then runs again with the new column', async () => {
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: preparingPool(tdb.pool) }) });
    await sql`create table prepared_probe (id int primary key)`.execute(db);
    await sql`insert into prepared_probe values (1)`.execute(db);
    const read = () => sql<Record<string, unknown>>`select * from prepared_probe where id = ${1}`.execute(db);
    for (let i = 0; i < PREPARE_AFTER + 1; i++) expect((await read()).rows).toEqual([{ id: 1 }]);
    await sql`alter table prepared_probe add column note text default 'x'`.execute(db);
    // PostgreSQL refuses the prepared statement whose result columns changed …
    await expect(read()).rejects.toThrow(/cached plan must not change result type/);
    // … and the connection prepares it afresh
    expect((await read()).rows).toEqual([{ id: 1, note: 'x' }]);
    expect((await read()).rows).toEqual([{ id: 1, note: 'x' }]);
  });

  it('a Db with genericPlans plans generically inside its transactions only, and leaves the connection as it found it', async () => {
    const generic = createDb(tdb.pool, { genericPlans: true });
    const mode = async (db: Kysely<Database>) => (await sql<{ m: string }>`select current_setting('plan_cache_mode') as m`.execute(db)).rows[0]!.m;
    const inside = await generic.transaction().execute(async (trx) => {
      await sql`create temporary table generic_probe (id int primary key) on commit drop`.execute(trx);
      await sql`insert into generic_probe select generate_series(1, 100)`.execute(trx);
      const read = async (id: number) => (await sql<{ id: number }>`select id from generic_probe where id = ${id}`.execute(trx)).rows;
      for (let i = 1; i <= PREPARE_AFTER + 2; i++) expect(await read(i)).toEqual([{ id: i }]);
      return mode(trx);
    });
    expect(inside).toBe('force_generic_plan');
    // the pool's one connection, after the commit, and through another Db
    expect(await mode(generic)).toBe('auto');
    expect(await mode(tdb.db)).toBe('auto');
    // a rolled-back transaction too
    await expect(
      generic.transaction().execute(async (trx) => {
        expect(await mode(trx)).toBe('force_generic_plan');
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await mode(generic)).toBe('auto');
  });
});
