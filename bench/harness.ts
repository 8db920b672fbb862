import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDb, createPool, type Db } from '../src/db/db.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';
import type pg from 'pg';

/**
 * A fresh PostgreSQL for a benchmark: the embedded server with its default
 * (durable) settings in a temporary directory, or BENCH_DATABASE_URL.
 */
export async function benchDatabase(poolSize = 10): Promise<{ db: Db; pool: pg.Pool; url: string; close(): Promise<void> }> {
  const log = createLogger('warn');
  let url = process.env.BENCH_DATABASE_URL;
  let stop = async () => {};
  if (!url) {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-bench-'));
    await fs.chmod(dir, 0o755);
    // BENCH_DURABILITY=fast turns fsync off, to separate CPU cost from disk flushes.
    const durability = process.env.BENCH_DURABILITY === 'fast' ? 'fast' : 'durable';
    const server = await startEmbeddedPostgres({ dir, port: await freePort(), log, durability });
    url = server.url;
    stop = async () => {
      await server.stop('fast');
      await fs.rm(dir, { recursive: true, force: true });
    };
  }
  const pool = createPool(url, poolSize);
  await migrate(pool);
  const db = createDb(pool);
  return {
    db,
    pool,
    url,
    close: async () => {
      await db.destroy();
      await stop();
    },
  };
}

export function rate(n: number, ms: number): number {
  return Math.round((n / ms) * 1000);
}
