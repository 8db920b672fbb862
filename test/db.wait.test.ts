import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, isConnectionLoss, isServerAway, waitForDatabase } from '../src/db/db.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { freePort } from './helpers/ports.ts';

/** A process started while its PostgreSQL restarts waits for it; a wrong password does not wait. */
let tdb: TestDatabase;
beforeAll(async () => {
  tdb = await createTestDatabase();
});
afterAll(async () => {
  await tdb?.close();
});

describe('waiting for the database at start-up', () => {
  it('answers at once when the server is up', async () => {
    const pool = createPool(tdb.url, 2);
    try {
      const waits: string[] = [];
      await waitForDatabase(pool, 5_000, (r) => waits.push(r));
      expect(waits).toEqual([]);
    } finally {
      await pool.end();
    }
  });

  it('retries a server that is not there until the deadline, saying so once', async () => {
    // port 1: nothing listens there, and no other test can take it in the meantime (a free port
    // picked at random was once taken by another test's server: "Connection terminated unexpectedly")
    const pool = createPool('postgres://x:y@127.0.0.1:1/none', 2);
    try {
      const waits: string[] = [];
      const started = Date.now();
      await expect(waitForDatabase(pool, 800, (r) => waits.push(r))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(750);
      expect(waits).toHaveLength(1);
    } finally {
      await pool.end();
    }
  });

  it('retries a Unix socket that is not there (the server is down) until the deadline', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-nosocket-'));
    const pool = createPool(`postgres://x:y@localhost:${await freePort()}/none?host=${encodeURIComponent(dir)}`, 2);
    try {
      const started = Date.now();
      await expect(waitForDatabase(pool, 800)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(750);
    } finally {
      await pool.end();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  const coded = (message: string, code: string) => Object.assign(new Error(message), { code });

  it('tells a server that is away from a refusal or a missing file', () => {
    expect(isServerAway(coded('connect ENOENT /tmp/h/socket/.s.PGSQL.5432', 'ENOENT'))).toBe(true);
    expect(isServerAway(coded('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'))).toBe(true);
    expect(isServerAway(coded('the database system is starting up', '57P03'))).toBe(true);
    expect(isServerAway(coded("ENOENT: no such file or directory, open '/tmp/import.csv'", 'ENOENT'))).toBe(false);
    expect(isServerAway(coded('password authentication failed for user "x"', '28P01'))).toBe(false);
    expect(isServerAway(coded('database "none" does not exist', '3D000'))).toBe(false);
    expect(isServerAway(new Error('Connection terminated unexpectedly'))).toBe(false);
  });

  it('tells a lost database connection from a fault in the code (the job worker restarts its runner on the first, not the second)', () => {
    expect(isConnectionLoss(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isConnectionLoss(new Error('Client has encountered a connection error and is not queryable'))).toBe(true);
    expect(isConnectionLoss(coded('terminating connection due to administrator command', '57P01'))).toBe(true);
    expect(isConnectionLoss(coded('the database system is shutting down', '57P03'))).toBe(true);
    expect(isConnectionLoss(coded('connect ENOENT /tmp/x/.s.PGSQL.5432', 'ENOENT'))).toBe(true);
    expect(isConnectionLoss(coded('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'))).toBe(true);
    expect(isConnectionLoss(coded("ENOENT: no such file or directory, open '/tmp/import.csv'", 'ENOENT'))).toBe(false);
    expect(isConnectionLoss(coded('duplicate key value violates unique constraint', '23505'))).toBe(false);
    expect(isConnectionLoss(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBe(false);
    expect(isConnectionLoss('Connection terminated unexpectedly')).toBe(false);
  });
  it('fails at once on an error that waiting cannot mend (a wrong password)', async () => {
    const url = new URL(tdb.url);
    url.password = 'wrong';
    const pool = createPool(url.toString(), 2);
    try {
      const started = Date.now();
      await expect(waitForDatabase(pool, 10_000)).rejects.toMatchObject({ code: '28P01' });
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await pool.end();
    }
  });
});
