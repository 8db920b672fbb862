import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { reconcile } from '../src/messaging/index.ts';
import { storedAccount } from './helpers/orgs.ts';
import { eventually, grantCredits, message, nudge, type Pipeline, sendViaApi, spawnWorker, startPipeline, waitForStatus } from './helpers/pipeline.ts';
import { killAllSpawned, type Spawned } from './helpers/process.ts';

/**
 * G2/G3 with real processes: a separate `credence worker` process is killed
 * with SIGKILL while the carrier holds its request (accepted, not yet
 * answered), so the outcome is never recorded by the worker.
 */
let p: Pipeline;
let home: string;

beforeAll(async () => {
  // Callbacks come late (after the kill); the carrier accepts and never answers.
  p = await startPipeline({ withWorker: false, faults: { hangAfterAccept: 1 }, callbackDelayMs: { sent: [1500, 1500], final: [200, 200] } });
  home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-crash-'));
});
afterAll(async () => {
  await killAllSpawned();
  await p.close();
  await fs.rm(home, { recursive: true, force: true });
});

const startWorkerProcess = (): Promise<Spawned> => spawnWorker(p, home, { CARRIER_TIMEOUT_MS: '30000' });

describe('a worker killed after the carrier accepted', () => {
  it('leaves exactly one copy at the carrier, and the message ends sent via its callback, charged once', async () => {
    await grantCredits(p, 10);
    const worker = await startWorkerProcess();
    await worker.waitFor(/Credence is running/, 60_000);
    const id = (await sendViaApi(p, { to: '+14155552671', body: 'crash me' })).json.id as string;
    // The carrier has it; the worker is waiting for an answer that never comes.
    await eventually(async () => (p.simulator.log().some((m) => m.body === 'crash me') ? true : undefined), 20_000, 'carrier acceptance');
    expect((await message(p, id)).status).toBe('sending');
    worker.child.kill('SIGKILL');
    await worker.exited;

    const settled = await waitForStatus(p, id, ['sent', 'delivered'], 20_000);
    expect(settled.provider_sid).toBe(p.simulator.log().find((m) => m.body === 'crash me')!.sid);

    // A new worker and reconciliation after the lease: nothing is sent again.
    const second = await startWorkerProcess();
    await second.waitFor(/Credence is running/, 60_000);
    await reconcile(p.sendDeps);
    await waitForStatus(p, id, ['delivered'], 20_000);
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
    expect(p.simulator.log().filter((m) => m.body === 'crash me')).toHaveLength(1);
    // The dead worker never captured it; reconciliation does, once its lease is over (G3).
    await eventually(async () => {
      await reconcile(p.sendDeps);
      const acc = await storedAccount(p.tdb.db, p.tenant.organizationId);
      return acc.spent === 1 && acc.reservedPurchased === 0 ? acc : undefined;
    }, 20_000, 'capture by reconciliation');
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 120_000);

  it('killed mid-batch: every message ends sent exactly once or is sent again only when the carrier never had it', async () => {
    p.simulator.setFaults({ hangAfterAccept: 0.5, latencyMs: { min: 0, max: 30 } });
    await grantCredits(p, 100);
    const worker = await startWorkerProcess();
    await worker.waitFor(/Credence is running/, 60_000);
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) ids.push((await sendViaApi(p, { to: '+14155552671', body: `batch ${i}` })).json.id as string);
    await eventually(async () => (p.simulator.log().filter((m) => m.body.startsWith('batch ')).length >= 10 ? true : undefined), 20_000);
    worker.child.kill('SIGKILL');
    await worker.exited;

    // Recovery: the carrier answers normally again, a fresh worker runs, reconciliation settles the rest.
    p.simulator.setFaults({});
    let lastSeen = '';
    const next = await startWorkerProcess();
    await next.waitFor(/Credence is running/, 60_000);
    await eventually(
      async () => {
        await nudge(p);
        const rows = await Promise.all(ids.map((id) => message(p, id)));
        if (rows.every((r) => r.status === 'delivered')) return rows;
        lastSeen = rows.filter((r) => r.status !== 'delivered').map((r) => `${r.id}:${r.status}:${r.status_reason}:${r.attempts}`).join(' ');
        return undefined;
      },
      120_000,
      'every batch message delivered',
    ).catch((err: Error) => {
      throw new Error(`${err.message}; not delivered: ${lastSeen}`);
    });
    next.child.kill('SIGTERM');
    await next.exited;
    for (let i = 0; i < 30; i++) expect(p.simulator.log().filter((m) => m.body === `batch ${i}`), `batch ${i}`).toHaveLength(1);
    await eventually(async () => {
      await reconcile(p.sendDeps);
      const acc = await storedAccount(p.tdb.db, p.tenant.organizationId);
      return acc.spent === 31 && acc.reservedPurchased === 0 ? acc : undefined;
    }, 20_000, 'every delivered message captured');
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 180_000);
});
