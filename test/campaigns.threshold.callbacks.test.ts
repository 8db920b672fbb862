import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { campaignAction, createCampaign, makeAudience, waitForCampaign } from './helpers/campaigns.ts';
import { grantCredits, type Pipeline, startPipeline } from './helpers/pipeline.ts';

let p: Pipeline;
beforeAll(async () => {
  // the carrier takes every message, then reports 80 % of them failed in the status callback (as when it filters them)
  p = await startPipeline({ senderMps: 1000, faults: { finalStatus: { failed: 0.8 } }, seed: 3, callbackDelayMs: { sent: [0, 5], final: [5, 20] } });
  await grantCredits(p, 100_000);
});
afterAll(async () => {
  await p?.close();
});

it('the error threshold counts failures the carrier reports in its status callbacks (a filtered campaign ran to the end)', async () => {
  const a = await makeAudience(p, 300, { firstPhone: 2000 });
  const c = await createCampaign(p, a.listId, { error_threshold: 0.2, throttle_mps: 30 });
  await campaignAction(p, c.id, 'start');
  const end = await waitForCampaign(p, c.id, (r) => r.status !== 'running', 40_000);
  expect(end.status).toBe('paused');
  expect(end.pause_reason).toBe('error_threshold');
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where campaign_id = ${c.id} and claimed_at is not null`.execute(p.tdb.db);
  expect(rows[0]!.n).toBeLessThan(300);
}, 60_000);
