import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { reconcile } from '../src/messaging/index.ts';
import { campaignAction, createCampaign, makeAudience, recipients, waitForCampaign } from './helpers/campaigns.ts';
import { storedAccount } from './helpers/orgs.ts';
import { eventually, grantCredits, nudge, type Pipeline, spawnWorker, startPipeline } from './helpers/pipeline.ts';
import { killAllSpawned, type Spawned } from './helpers/process.ts';

/**
 * G2 and G7 for campaigns with real processes: two `credence worker`
 * processes send one campaign while the API pauses and resumes it twenty
 * times, and one worker is killed with SIGKILL mid-batch and restarted.
 * The carrier simulator's log must hold exactly one message per recipient.
 */
let p: Pipeline;
let home: string;

beforeAll(async () => {
  p = await startPipeline({ withWorker: false, faults: { latencyMs: { min: 0, max: 15 } } });
  // Never conclude "the carrier does not have it" while a live worker's call may still be under way.
  p.sendDeps.lookupGraceMs = 8_000;
  home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-campaign-crash-'));
});
afterAll(async () => {
  await killAllSpawned();
  await p.close();
  await fs.rm(home, { recursive: true, force: true });
});

// A live worker's call ends (answer or timeout) within 3 s + the 2 s slot horizon:
// reconciliation only takes "not at the carrier" as proof after that (lookupGraceMs above).
// The workers know the same grace, so none of them calls later than it allows (callWindowMs).
const worker = (): Promise<Spawned> =>
  spawnWorker(p, home, { CARRIER_TIMEOUT_MS: '3000', LOOKUP_GRACE_MS: String(p.sendDeps.lookupGraceMs), WORKER_CONCURRENCY: '4', LOG_LEVEL: 'warn' });

describe('a campaign under a pause/resume storm, two workers, one killed mid-batch', () => {
  it('sends every recipient exactly once and completes with counts that add up', async () => {
    const audience = await makeAudience(p, 400, { firstPhone: 6000 });
    await grantCredits(p, 1_000);
    // a sender slow enough that the storm happens while most of the campaign is still to go
    await p.app.inject({
      method: 'POST',
      url: '/v1/sender-numbers',
      headers: { authorization: `Bearer ${p.tenant.workspaceKey}` },
      payload: { phone_number: '+14155550166', mps: 40 },
    });
    const { id } = await createCampaign(p, audience.listId, { from: '+14155550166' });
    let a = await worker();
    const b = await worker();
    await Promise.all([a.waitFor(/Credence is running/, 60_000), b.waitFor(/Credence is running/, 60_000)]);
    expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);

    let replacement: Promise<Spawned> | undefined;
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 60 + ((i * 37) % 90)));
      await campaignAction(p, id, 'pause');
      await new Promise((r) => setTimeout(r, 30 + ((i * 53) % 70)));
      await campaignAction(p, id, 'resume');
      if (i === 8) {
        // mid-batch: worker A dies holding claimed messages; its replacement
        // starts meanwhile (the storm does not wait for it: a slow start on a
        // busy machine would otherwise let the campaign finish before the storm)
        a.child.kill('SIGKILL');
        await a.exited;
        replacement = worker().then(async (w) => {
          await w.waitFor(/Credence is running/, 60_000);
          return w;
        });
      }
    }
    const sentDuringStorm = p.simulator.log().length;
    expect(sentDuringStorm, 'the storm came while the campaign was still sending').toBeLessThan(400);
    a = await replacement!;

    // Reconciliation and the sweep (minute crons in production) settle what the dead worker held.
    await eventually(
      async () => {
        await nudge(p);
        const c = await waitForCampaign(p, id, () => true);
        return c.status === 'completed' ? c : undefined;
      },
      150_000,
      'campaign completed',
    ).catch(async (err: Error) => {
      const { rows } = await sql`select status, status_reason, count(*)::int as n from messages where campaign_id = ${id} group by 1, 2`.execute(p.tdb.db);
      const c = await waitForCampaign(p, id, () => true);
      throw new Error(`${err.message}: campaign ${JSON.stringify(c)} messages ${JSON.stringify(rows)}`);
    });
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    await Promise.all([a.exited, b.exited]);

    const recs = await recipients(p, id);
    expect(recs).toHaveLength(400);
    const copies = new Map<string, number>();
    for (const e of p.simulator.log()) copies.set(e.to, (copies.get(e.to) ?? 0) + 1);
    const wrong = recs.filter((r) => copies.get(r.phone) !== 1).map((r) => `${r.seq}:${copies.get(r.phone) ?? 0}`);
    expect(wrong).toEqual([]);
    await eventually(async () => {
      await reconcile(p.sendDeps);
      const acc = await storedAccount(p.tdb.db, p.tenant.organizationId);
      return acc.spent === 400 && acc.reservedPurchased === 0 ? acc : undefined;
    }, 30_000, 'every send captured');
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 240_000);
});
