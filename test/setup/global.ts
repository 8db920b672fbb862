import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { createPool } from '../../src/db/db.ts';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { freePort } from '../helpers/ports.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Maintenance URL of the test server (CREATE DATABASE … TEMPLATE). */
    pgAdminUrl: string;
    /** Name of the migrated template database each test file clones. */
    pgTemplate: string;
  }
}

/**
 * One PostgreSQL for the whole run: the embedded server in a temporary
 * directory (or TEST_DATABASE_URL's server), with one migrated template
 * database that every test file clones.
 */
export default async function setup(project: TestProject) {
  const log = createLogger(process.env.TEST_LOG_LEVEL === 'debug' ? 'debug' : 'warn');
  let adminUrl = process.env.TEST_DATABASE_URL;
  let stop = async () => {};
  if (adminUrl === undefined || adminUrl === '') {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-test-pg-'));
    await fs.chmod(dir, 0o755);
    const server = await startEmbeddedPostgres({
      dir,
      port: await freePort(),
      database: 'postgres',
      durability: 'fast',
      maxConnections: 400,
      log,
    });
    adminUrl = server.adminUrl;
    stop = async () => {
      await server.stop('fast');
      await fs.rm(dir, { recursive: true, force: true });
    };
  }
  const template = `credence_template_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${template}`);
  await admin.query(`create database ${template}`);
  await admin.end();

  const url = new URL(adminUrl);
  url.pathname = `/${template}`;
  const pool = createPool(url.toString(), 2);
  await migrate(pool);
  await pool.end();

  project.provide('pgAdminUrl', adminUrl);
  project.provide('pgTemplate', template);

  return async () => {
    if (process.env.TEST_DATABASE_URL) {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`drop database if exists ${template}`);
      await c.end();
    }
    await stop();
  };
}
