import { afterAll, beforeAll, expect, it } from 'vitest';
import { closeApp } from '../src/http/app.ts';
import { createCampaign, makeAudience } from './helpers/campaigns.ts';
import { type Pipeline, startPipeline } from './helpers/pipeline.ts';

let p: Pipeline;
beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000, withWorker: false });
});
afterAll(async () => {
  await p?.tdb.close();
  await p?.simulator.stop();
});

it("an open progress stream ends when the server closes, and does not hold up the shutdown (it waited for the viewer to leave)", async () => {
  const a = await makeAudience(p, 2, { firstPhone: 7000 });
  const { id } = await createCampaign(p, a.listId); // a draft: its stream stays open
  const res = await fetch(`${p.apiUrl}/v1/campaigns/${id}/progress/stream`, { headers: { authorization: `Bearer ${p.tenant.workspaceKey}` } });
  const reader = res.body!.getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain('event: progress');
  const outcome = await Promise.race([closeApp(p.app).then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open after 5 s'), 5_000))]);
  expect(outcome).toBe('closed');
  // the viewer sees the stream end (and reconnects elsewhere)
  let done = false;
  while (!done) done = (await reader.read()).done;
}, 30_000);
