import pg from 'pg';
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

it('a stream whose API key is revoked ends (the viewer kept watching after the revocation)', async () => {
  const a = await makeAudience(p, 1, { firstPhone: 7100 });
  const { id } = await createCampaign(p, a.listId);
  const created = await p.app.inject({
    method: 'POST',
    url: '/v1/api-keys',
    headers: { authorization: `Bearer ${p.tenant.orgKey}` },
    payload: { name: 'dashboard', scope: 'workspace', workspace_id: p.tenant.workspaceId },
  });
  expect(created.statusCode, created.body).toBe(201);
  const { key, api_key: apiKey } = created.json() as { key: string; api_key: { id: string } };
  const res = await fetch(`${p.apiUrl}/v1/campaigns/${id}/progress/stream`, { headers: { authorization: `Bearer ${key}` } });
  const reader = res.body!.getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain('event: progress');
  const revoked = await p.app.inject({ method: 'POST', url: `/v1/api-keys/${apiKey.id}/revoke`, headers: { authorization: `Bearer ${p.tenant.orgKey}` } });
  expect(revoked.statusCode).toBe(200);
  let text = '';
  const deadline = Date.now() + 10_000;
  for (;;) {
    const chunk = await Promise.race([reader.read(), new Promise<'late'>((r) => setTimeout(() => r('late'), deadline - Date.now()))]);
    if (chunk === 'late') throw new Error(`stream still open 10 s after the revocation: ${text}`);
    if (chunk.done) break;
    text += new TextDecoder().decode(chunk.value);
  }
  expect(text).toContain('event: end');
}, 30_000);

it("an open progress stream ends when the server closes, and does not hold up the shutdown (it waited for the viewer to leave)", async () => {
  const a = await makeAudience(p, 2, { firstPhone: 7000 });
  const { id } = await createCampaign(p, a.listId); // a draft: its stream stays open
  const res = await fetch(`${p.apiUrl}/v1/campaigns/${id}/progress/stream`, { headers: { authorization: `Bearer ${p.tenant.workspaceKey}` } });
  const reader = res.body!.getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain('event: progress');
  const outcome = await Promise.race([closeApp(p.app).then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open after 5 s'), 5_000))]);
  expect(outcome).toBe('closed');
  // the viewer sees the stream end (and reconnects elsewhere)
  let text = '';
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value);
  expect(text).toContain('event: end\ndata: {"reason":"shutting_down"}');
}, 30_000);

it('a stream whose request was still in its look-up when the shutdown began does not hold the shutdown either', async () => {
  // its own server: the one above has been closed
  const q = await startPipeline({ senderMps: 1000, withWorker: false });
  const a = await makeAudience(q, 2, { firstPhone: 7200 });
  const { id } = await createCampaign(q, a.listId);
  // hold the stream's first look-up (the campaign read) while the shutdown starts
  const other = new pg.Client({ connectionString: q.tdb.url });
  await other.connect();
  await other.query('begin');
  await other.query('lock table campaigns in access exclusive mode');
  const res = fetch(`${q.apiUrl}/v1/campaigns/${id}/progress/stream`, { headers: { authorization: `Bearer ${q.tenant.workspaceKey}` } });
  await new Promise((r) => setTimeout(r, 300));
  const closing = closeApp(q.app).then(() => 'closed');
  await new Promise((r) => setTimeout(r, 300)); // the shutdown's preClose has run; the stream was not registered yet
  await other.query('commit');
  await other.end();
  const outcome = await Promise.race([closing, new Promise((r) => setTimeout(() => r('still open after 5 s'), 5_000))]);
  expect(outcome).toBe('closed');
  const text = await (await res).text();
  expect(text).toContain('"reason":"shutting_down"');
  await q.tdb.close();
  await q.simulator.stop();
}, 30_000);

it('an open stream sends a keep-alive comment while it waits, even for a count that takes long (an idle stream is closed by proxies)', async () => {
  const q = await startPipeline({ senderMps: 1000, withWorker: false, streamHeartbeatMs: 100 });
  try {
    const a = await makeAudience(q, 2, { firstPhone: 7300 });
    const { id } = await createCampaign(q, a.listId);
    // the progress count waits behind this lock, as a count of millions of messages would take its time
    const other = new pg.Client({ connectionString: q.tdb.url });
    await other.connect();
    await other.query('begin');
    await other.query('lock table messages in access exclusive mode');
    const res = await fetch(`${q.apiUrl}/v1/campaigns/${id}/progress/stream`, { headers: { authorization: `Bearer ${q.tenant.workspaceKey}` } });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    let text = '';
    const readUntil = async (done: (t: string) => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      while (!done(text)) {
        const chunk = await Promise.race([reader.read(), new Promise<'late'>((r) => setTimeout(() => r('late'), Math.max(0, deadline - Date.now())))]);
        if (chunk === 'late' || chunk.done) return;
        text += new TextDecoder().decode(chunk.value);
      }
    };
    await readUntil((t) => t.split(': keep-alive\n\n').length > 3, 3_000);
    expect(text).not.toContain('event: progress');
    expect(text.split(': keep-alive\n\n').length - 1).toBeGreaterThanOrEqual(3);
    await other.query('commit');
    await other.end();
    await readUntil((t) => t.includes('event: progress'), 5_000);
    expect(text).toContain('event: progress');
    await reader.cancel();
  } finally {
    await closeApp(q.app);
    await q.tdb.close();
    await q.simulator.stop();
  }
}, 30_000);
