import type pg from 'pg';
import type { Config } from './config.ts';
import { createDb, createPool, type Db } from './db/db.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './db/embedded.ts';
import { migrate } from './db/migrate.ts';
import { buildApp } from './http/app.ts';
import { buildTaskList, CRONTAB, startWorker, type WorkerHandle } from './jobs/index.ts';
import type { Logger } from './shared/logger.ts';
import { bootstrapOperatorKey, type CreatedKey } from './tenancy/index.ts';

/**
 * The one place where Credence is wired: config → database → adapters →
 * HTTP app and job worker. Everything else receives what it needs as
 * arguments.
 */
export interface Database {
  pool: pg.Pool;
  db: Db;
  url: string;
  embedded: EmbeddedPostgres | undefined;
  close(): Promise<void>;
}

export async function openDatabase(config: Config, log: Logger): Promise<Database> {
  let embedded: EmbeddedPostgres | undefined;
  let url = config.databaseUrl;
  if (url === undefined) {
    embedded = await startEmbeddedPostgres({ dir: config.home, port: config.embeddedPgPort, log });
    url = embedded.url;
  }
  const pool = createPool(url, config.dbPoolSize);
  const db = createDb(pool);
  let closed: Promise<void> | undefined;
  return {
    pool,
    db,
    url,
    embedded,
    close: () => {
      closed ??= (async () => {
        await db.destroy().catch((err: unknown) => log.warn({ err }, 'closing the pool failed'));
        await embedded?.stop();
      })();
      return closed;
    },
  };
}

export interface Roles {
  api: boolean;
  worker: boolean;
}

export interface RunningCredence {
  url: string | undefined;
  operatorKey: CreatedKey | undefined;
  database: Database;
  /** Resolves if a part fails on its own (the worker runner dies). */
  failed: Promise<Error>;
  stop(): Promise<void>;
}

export async function startCredence(
  config: Config,
  log: Logger,
  roles: Roles,
): Promise<RunningCredence> {
  const database = await openDatabase(config, log);
  const { db, pool } = database;
  let worker: WorkerHandle | undefined;
  let app: Awaited<ReturnType<typeof buildApp>> | undefined;
  try {
    const result = await migrate(pool);
    if (result.applied.length > 0) log.info({ applied: result.applied }, 'migrations applied');

    let url: string | undefined;
    let operatorKey: CreatedKey | undefined;
    if (roles.api) {
      operatorKey = await bootstrapOperatorKey(db);
      app = await buildApp({ config, db, pool, log });
      await app.listen({ host: config.host, port: config.port });
      const address = app.server.address();
      const port = typeof address === 'object' && address !== null ? address.port : config.port;
      url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
    }
    let failed: Promise<Error> = new Promise(() => {});
    if (roles.worker) {
      worker = await startWorker({
        pool,
        taskList: buildTaskList({ db, log }),
        crontab: CRONTAB,
        concurrency: config.workerConcurrency,
        log,
      });
      failed = worker.done.then(
        () => new Error('the job worker stopped'),
        (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
      );
    }

    let stopping: Promise<void> | undefined;
    const stop = () => {
      stopping ??= (async () => {
        // Order matters: stop taking requests, let in-flight jobs finish (or
        // release them), then close the pool, and stop PostgreSQL last.
        await app
          ?.close()
          .catch((err: unknown) => log.warn({ err }, 'closing the HTTP server failed'));
        await worker
          ?.stop()
          .catch((err: unknown) => log.warn({ err }, 'stopping the worker failed'));
        await database.close();
      })();
      return stopping;
    };
    return { url, operatorKey, database, failed, stop };
  } catch (err) {
    await app?.close().catch(() => {});
    await worker?.stop().catch(() => {});
    await database.close();
    throw err;
  }
}
