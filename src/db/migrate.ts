import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { runMigrations as runWorkerMigrations } from 'graphile-worker';
import type pg from 'pg';

/**
 * Forward-only SQL migrations: `src/db/migrations/NNNN_name.sql`, applied in
 * name order, each in its own transaction together with its record in
 * `credence_migrations`, so a failing file leaves the schema as it was.
 * An advisory lock serialises concurrent migrators (several processes
 * starting at once). A landed migration that was edited is refused.
 */
export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));
const LOCK_KEY = 7_231_044_913; // arbitrary, constant: "credence migrations"

export interface MigrationFile {
  name: string;
  sql: string;
  checksum: string;
}

export async function readMigrationFiles(dir: string = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const names = (await fs.readdir(dir)).filter((n) => /^\d{4}_[a-z0-9_]+\.sql$/.test(n)).sort();
  return Promise.all(
    names.map(async (name) => {
      const sql = await fs.readFile(`${dir}/${name}`, 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    }),
  );
}

const CREATE_TABLE = `
  create table if not exists credence_migrations (
    name text primary key,
    checksum text not null,
    applied_at timestamptz not null default now()
  )`;

export interface MigrateResult {
  applied: string[];
  alreadyApplied: number;
}

export async function migrate(
  pool: pg.Pool,
  options: { dir?: string; includeWorker?: boolean } = {},
): Promise<MigrateResult> {
  const files = await readMigrationFiles(options.dir);
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('select pg_advisory_lock($1)', [LOCK_KEY]);
    try {
      await client.query(CREATE_TABLE);
      const { rows } = await client.query<{ name: string; checksum: string }>(
        'select name, checksum from credence_migrations',
      );
      const done = new Map(rows.map((r) => [r.name, r.checksum]));
      for (const file of files) {
        const previous = done.get(file.name);
        if (previous !== undefined) {
          if (previous !== file.checksum) {
            throw new Error(
              `Migration ${file.name} was changed after it was applied; migrations are forward-only: add a new file instead.`,
            );
          }
          continue;
        }
        try {
          await client.query('begin');
          await client.query(file.sql);
          await client.query('insert into credence_migrations (name, checksum) values ($1, $2)', [
            file.name,
            file.checksum,
          ]);
          await client.query('commit');
          applied.push(file.name);
        } catch (err) {
          await client.query('rollback');
          throw new Error(
            `Migration ${file.name} failed and was rolled back: ${(err as Error).message}`,
          );
        }
      }
    } finally {
      await client.query('select pg_advisory_unlock($1)', [LOCK_KEY]);
    }
  } finally {
    client.release();
  }
  if (options.includeWorker !== false) await runWorkerMigrations({ pgPool: pool });
  return { applied, alreadyApplied: files.length - applied.length };
}

/** Names of migration files not yet applied (empty when the schema is current). */
export async function pendingMigrations(pool: pg.Pool, dir?: string): Promise<string[]> {
  const files = await readMigrationFiles(dir);
  const { rows } = await pool.query<{ name: string }>(`select name from credence_migrations`);
  const done = new Set(rows.map((r) => r.name));
  return files.filter((f) => !done.has(f.name)).map((f) => f.name);
}
