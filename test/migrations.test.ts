import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool } from '../src/db/db.ts';
import {
  MIGRATIONS_DIR,
  migrate,
  pendingMigrations,
  readMigrationFiles,
} from '../src/db/migrate.ts';
import { createEmptyDatabase } from './helpers/db.ts';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

async function emptyPool() {
  const { url, drop } = await createEmptyDatabase();
  const pool = createPool(url, 4);
  cleanups.push(async () => {
    await pool.end();
    await drop();
  });
  return pool;
}

async function tables(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ t: string }>(
    "select table_schema || '.' || table_name as t from information_schema.tables where table_schema in ('public', 'graphile_worker') order by 1",
  );
  return rows.map((r) => r.t);
}

describe('migrations', () => {
  it('apply on a fresh database, then a second run changes nothing', async () => {
    const pool = await emptyPool();
    const files = await readMigrationFiles();
    const first = await migrate(pool);
    expect(first.applied).toEqual(files.map((f) => f.name));
    const schema = await tables(pool);
    expect(schema).toContain('public.organizations');
    expect(schema).toContain('public.api_keys');
    const second = await migrate(pool);
    expect(second.applied).toEqual([]);
    expect(second.alreadyApplied).toBe(files.length);
    expect(await tables(pool)).toEqual(schema);
    expect(await pendingMigrations(pool)).toEqual([]);
  });

  it('concurrent migrators apply each file once', async () => {
    const pool = await emptyPool();
    const results = await Promise.all([migrate(pool), migrate(pool), migrate(pool)]);
    const applied = results.flatMap((r) => r.applied);
    expect(applied.sort()).toEqual((await readMigrationFiles()).map((f) => f.name).sort());
  });

  it('a failing migration leaves the schema unchanged and is not recorded', async () => {
    const pool = await emptyPool();
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-mig-'));
    cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
    for (const f of await fs.readdir(MIGRATIONS_DIR))
      await fs.copyFile(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
    await migrate(pool, { dir });
    const before = await tables(pool);
    await fs.writeFile(
      path.join(dir, '9998_half_broken.sql'),
      'create table half_made (id int primary key);\ninsert into half_made values (1);\nselect no_such_function();\n',
    );
    await expect(migrate(pool, { dir })).rejects.toThrow(
      /9998_half_broken.sql failed and was rolled back/,
    );
    expect(await tables(pool)).toEqual(before);
    expect(await pendingMigrations(pool, dir)).toEqual(['9998_half_broken.sql']);
  });

  it('refuses to run when a landed migration was edited', async () => {
    const pool = await emptyPool();
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-mig-'));
    cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
    for (const f of await fs.readdir(MIGRATIONS_DIR))
      await fs.copyFile(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
    await migrate(pool, { dir });
    await fs.appendFile(path.join(dir, '0001_tenancy.sql'), '\n-- sneaky edit\n');
    await expect(migrate(pool, { dir })).rejects.toThrow(/changed after it was applied/);
  });
});
