import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from './helpers/db.ts';
import { freePort } from './helpers/ports.ts';
import { isAlive, killAllSpawned, spawnCredence } from './helpers/process.ts';

// These tests run `credence start` exactly as a user would: its own embedded
// PostgreSQL in its own CREDENCE_HOME, then real signals.
let home: string;
let env: Record<string, string>;
let port: number;

beforeAll(async () => {
  home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-home-'));
  await fs.chmod(home, 0o755);
  port = await freePort();
  env = { CREDENCE_HOME: home, PORT: String(port), EMBEDDED_PG_PORT: String(await freePort()) };
});
afterAll(async () => {
  await killAllSpawned();
  await fs.rm(home, { recursive: true, force: true });
});

async function postgresPid(): Promise<number | undefined> {
  try {
    const text = await fs.readFile(path.join(home, 'pgdata', 'postmaster.pid'), 'utf8');
    return Number(text.split('\n')[0]);
  } catch {
    return undefined;
  }
}

describe('credence start: one command up, clean shutdown, data kept', () => {
  let firstKey: string;

  it('starts, prints the URL, docs and a bootstrap operator key, answers /healthz; SIGTERM leaves no postgres', async () => {
    const proc = spawnCredence(['start'], env);
    const [, key] = await proc.waitFor(/Bootstrap operator API key[^\n]*\n\s+(crd_op_\S+)/, 90_000);
    firstKey = key!;
    expect(proc.output()).toContain(`/docs`);
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    const pgPid = await postgresPid();
    expect(pgPid).toBeGreaterThan(0);
    expect(isAlive(pgPid!)).toBe(true);

    proc.child.kill('SIGTERM');
    const { code } = await proc.exited;
    expect(code).toBe(0);
    expect(isAlive(pgPid!)).toBe(false);
    expect(await postgresPid()).toBeUndefined();
  });

  it('a second start reuses the data: no new bootstrap key, the first key still works; Ctrl-C (SIGINT) stops cleanly', async () => {
    const proc = spawnCredence(['start'], env);
    await proc.waitFor(/Press Ctrl-C to stop/, 90_000);
    expect(proc.output()).not.toContain('Bootstrap operator API key');
    const me = await fetch(`http://127.0.0.1:${port}/v1/me`, {
      headers: { authorization: `Bearer ${firstKey}` },
    });
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({ scope: 'operator' });
    const pgPid = await postgresPid();
    proc.child.kill('SIGINT');
    expect((await proc.exited).code).toBe(0);
    expect(isAlive(pgPid!)).toBe(false);
  });

  it('after a SIGKILL leaves PostgreSQL orphaned, the next start takes it over and still stops cleanly', async () => {
    const killed = spawnCredence(['start'], env);
    await killed.waitFor(/Press Ctrl-C to stop/, 90_000);
    const orphan = await postgresPid();
    killed.child.kill('SIGKILL');
    await killed.exited;
    expect(isAlive(orphan!)).toBe(true);

    const proc = spawnCredence(['start'], env);
    await proc.waitFor(/Press Ctrl-C to stop/, 90_000);
    expect(isAlive(orphan!)).toBe(false);
    const me = await fetch(`http://127.0.0.1:${port}/v1/me`, {
      headers: { authorization: `Bearer ${firstKey}` },
    });
    expect(me.status).toBe(200);
    const pgPid = await postgresPid();
    proc.child.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
    expect(isAlive(pgPid!)).toBe(false);
  });
});

describe('a signal the moment a process says it is ready', () => {
  // The ready line wakes whoever waits for it, and the writer is often
  // preempted right there: its signal handlers must already be in place, or
  // the signal kills it outright (exit by SIGTERM, nothing stopped in order).
  it('stops the simulators and a worker cleanly, every time', async () => {
    const tdb = await createTestDatabase();
    try {
      const spawns = [
        ...Array.from({ length: 6 }, () => spawnCredence(['simulator'], { SIMULATOR_PORT: '0' })),
        ...Array.from({ length: 6 }, () => spawnCredence(['payments-simulator'], { PAYMENTS_SIMULATOR_PORT: '0' })),
        ...Array.from({ length: 3 }, (_, i) =>
          spawnCredence(['worker'], { DATABASE_URL: tdb.url, CREDENCE_HOME: path.join(home, `worker-${i}`), TWILIO_ACCOUNT_SID: 'AC' + '0'.repeat(32), TWILIO_AUTH_TOKEN: 'x'.repeat(32), TWILIO_API_URL: 'http://127.0.0.1:9' }),
        ),
      ];
      const exits = await Promise.all(
        spawns.map(async (proc) => {
          await proc.waitFor(/Press Ctrl-C to stop/, 90_000);
          proc.child.kill('SIGTERM');
          return proc.exited;
        }),
      );
      expect(exits).toEqual(spawns.map(() => ({ code: 0, signal: null })));
    } finally {
      await tdb.close();
    }
  });
});
