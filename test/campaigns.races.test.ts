import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { throttleStep } from '../src/campaigns/advance.ts';
import type { CampaignRow } from '../src/campaigns/campaigns.store.ts';
import type { Progress } from '../src/campaigns/progress.ts';
import { createProgressFeed } from '../src/campaigns/progressFeed.ts';
import { checkCampaign, resumeCampaignsForCredits } from '../src/campaigns/service.ts';
import { pauseCampaigns } from '../src/messaging/campaignGate.ts';
import { newId } from '../src/shared/ids.ts';
import { bearer, silentLog } from './helpers/app.ts';
import { campaignAction, createCampaign, makeAudience, waitForCampaign } from './helpers/campaigns.ts';
import { eventually, grantCredits, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * Campaign defects a review found (2026-11-24): races between a pause and
 * an automatic resume, throttles, the quote, the preview's sample, and the
 * live progress stream. The whole pipeline runs (api in-process, worker,
 * carrier simulator, PostgreSQL).
 */
let p: Pipeline;
beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000 });
  await grantCredits(p, 10_000);
});
afterAll(async () => {
  await p?.close();
});

const made = async (id: string) => (await sql<{ n: number }>`select count(*)::int as n from messages where campaign_id = ${id}`.execute(p.tdb.db)).rows[0]!.n;
const advanceJobs = async (id: string) =>
  (
    await sql<{ run_in_ms: number; locked: boolean }>`select (extract(epoch from j.run_at - now()) * 1000)::int as run_in_ms, j.locked_at is not null as locked
      from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
      where t.identifier = 'campaign_advance' and j.payload->>'campaignId' = ${id} and j.attempts < j.max_attempts`.execute(p.tdb.db)
  ).rows;

describe('a manual pause racing an automatic resume (credits arrived)', () => {
  it('the pause that commits first wins: the campaign stays paused for the manual reason', async () => {
    const a = await makeAudience(p, 2, { firstPhone: 7000 });
    const { id } = await createCampaign(p, a.listId);
    await sql`update campaigns set status = 'paused', pause_reason = 'insufficient_credits' where id = ${id}`.execute(p.tdb.db);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let paused!: () => void;
    const pausedSignal = new Promise<void>((r) => (paused = r));
    // the user's pause: its UPDATE done, not committed yet
    const userPause = p.tdb.db.transaction().execute(async (trx) => {
      expect(await pauseCampaigns(trx, [id], 'manual', 'user')).toEqual([id]);
      paused();
      await gate;
    });
    await pausedSignal;
    // a purchase resumes the campaigns paused for credits: it read this one as such, and waits for its row
    const purchase = p.tdb.db.transaction().execute((trx) => resumeCampaignsForCredits(trx, p.tenant.organizationId, 'purchase'));
    await new Promise((r) => setTimeout(r, 300));
    release();
    await userPause;
    expect(await purchase).toEqual([]);
    const { rows } = await sql<{ status: string; pause_reason: string | null }>`select status, pause_reason from campaigns where id = ${id}`.execute(p.tdb.db);
    expect(rows[0]).toEqual({ status: 'paused', pause_reason: 'manual' });
    await campaignAction(p, id, 'cancel');
  });
});

describe('throttles', () => {
  it('below one message a second: one message, and the next step 1/throttle seconds later', async () => {
    expect(throttleStep(0.25)).toEqual({ batch: 1, everyMs: 4_000 });
    expect(throttleStep(2.5)).toEqual({ batch: 2, everyMs: 800 });
    expect(throttleStep(3)).toEqual({ batch: 3, everyMs: 1_000 });
    expect(throttleStep(0.01)).toEqual({ batch: 1, everyMs: 100_000 });
    const a = await makeAudience(p, 20, { firstPhone: 1000 });
    const { id } = await createCampaign(p, a.listId, { throttle_mps: 0.25 });
    await campaignAction(p, id, 'start');
    await eventually(async () => ((await made(id)) === 1 && (await advanceJobs(id)).some((j) => !j.locked) ? true : undefined), 10_000, 'the first step');
    const [next] = await advanceJobs(id);
    expect(next!.run_in_ms).toBeGreaterThan(2_500);
    expect(await made(id)).toBe(1);
    await campaignAction(p, id, 'cancel');
  });

  it('neither pause/resume pairs nor the sweep restarting a slow campaign it thinks stalled bring its next step forward', async () => {
    const a = await makeAudience(p, 10, { firstPhone: 1500 });
    const { id } = await createCampaign(p, a.listId, { throttle_mps: 0.1 }); // one message every 10 s
    await campaignAction(p, id, 'start');
    await eventually(async () => ((await made(id)) === 1 ? true : undefined), 10_000, 'the first step');
    for (let i = 0; i < 3; i++) {
      expect((await campaignAction(p, id, 'pause')).statusCode).toBe(200);
      expect((await campaignAction(p, id, 'resume')).statusCode).toBe(200);
      await new Promise((r) => setTimeout(r, 300));
    }
    // the sweep's check sees a cursor that has not moved for a while (each pair added a step before)
    await sql`update campaigns set updated_at = now() - interval '1 minute' where id = ${id}`.execute(p.tdb.db);
    await checkCampaign({ db: p.tdb.db, log: silentLog }, id);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await made(id)).toBe(1);
    await eventually(async () => ((await advanceJobs(id)).some((j) => !j.locked && j.run_in_ms > 4_000) ? true : undefined), 5_000, 'the next step, still ahead');
    await campaignAction(p, id, 'cancel');
  });

  it('a pause and resume within a step leave one chain of steps, not two (the rate stays)', async () => {
    const a = await makeAudience(p, 200, { firstPhone: 3000 });
    const { id } = await createCampaign(p, a.listId, { throttle_mps: 2 });
    await campaignAction(p, id, 'start');
    await eventually(async () => ((await made(id)) >= 2 ? true : undefined), 10_000, 'the first step');
    expect((await campaignAction(p, id, 'pause')).statusCode).toBe(200);
    expect((await campaignAction(p, id, 'resume')).statusCode).toBe(200);
    for (let i = 0; i < 10; i++) {
      expect((await advanceJobs(id)).filter((j) => !j.locked).length).toBeLessThanOrEqual(1);
      await new Promise((r) => setTimeout(r, 200));
    }
    await campaignAction(p, id, 'cancel');
  });
});

describe('a scheduled start', () => {
  it('waits for its time, then runs by itself; a scheduled campaign starts early only when asked to (now: true)', async () => {
    const a = await makeAudience(p, 3, { firstPhone: 1700 });
    const soon = await createCampaign(p, a.listId, { scheduled_at: new Date(Date.now() + 3_000).toISOString() });
    const started = await campaignAction(p, soon.id, 'start');
    expect(started.json.status).toBe('scheduled');
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await made(soon.id)).toBe(0);
    await waitForCampaign(p, soon.id, (c) => c.status === 'completed', 20_000);
    expect(await made(soon.id)).toBe(3);

    const b = await makeAudience(p, 2, { firstPhone: 1800 });
    const later = await createCampaign(p, b.listId, { scheduled_at: new Date(Date.now() + 3_600_000).toISOString() });
    expect((await campaignAction(p, later.id, 'start')).json.status).toBe('scheduled');
    // a retried start does not send it early; only an explicit now does
    expect((await campaignAction(p, later.id, 'start')).statusCode).toBe(409);
    const nowRes = await p.app.inject({ method: 'POST', url: `/v1/campaigns/${later.id}/start`, headers: bearer(p.tenant.workspaceKey), payload: { now: true } });
    const now = { statusCode: nowRes.statusCode, json: nowRes.json() as Record<string, unknown> };
    expect(now.statusCode).toBe(200);
    expect(now.json.status).toBe('running');
    await waitForCampaign(p, later.id, (c) => c.status === 'completed', 20_000);
    expect(await made(later.id)).toBe(2);
    expect((await campaignAction(p, later.id, 'start')).statusCode).toBe(409);
  });
});

describe('quote and preview', () => {
  it('the quote leaves out the recipients the campaign skips for free (a country the workspace may not text)', async () => {
    const a = await makeAudience(p, 3, { firstPhone: 5000 });
    const gg = newId('ct');
    await sql`insert into contacts (id, organization_id, workspace_id, phone, country, first_name)
      values (${gg}, ${p.tenant.organizationId}, ${p.tenant.workspaceId}, '+447911123456', 'GG', 'Guernsey')`.execute(p.tdb.db);
    await sql`insert into contact_list_members (list_id, contact_id) values (${a.listId}, ${gg})`.execute(p.tdb.db);
    const { id } = await createCampaign(p, a.listId);
    const quote = (await p.app.inject({ method: 'GET', url: `/v1/campaigns/${id}/quote`, headers: bearer(p.tenant.workspaceKey) })).json() as { recipients: number; total_credits: number };
    await campaignAction(p, id, 'start');
    await waitForCampaign(p, id, (c) => c.status === 'completed', 30_000);
    const progress = await eventually(async () => {
      const res = (await p.app.inject({ method: 'GET', url: `/v1/campaigns/${id}/progress`, headers: bearer(p.tenant.workspaceKey) })).json() as { credits: { captured: number; reserved: number } };
      return res.credits.reserved === 0 ? res : undefined;
    }, 10_000, 'the captures');
    expect(quote.recipients).toBe(4);
    expect(quote.total_credits).toBe(progress.credits.captured);
    // the preview of the skipped contact says so, and prices it at nothing (it was priced as if sent)
    const preview = await p.app.inject({ method: 'POST', url: `/v1/campaigns/${id}/preview`, headers: bearer(p.tenant.workspaceKey), payload: { contact_id: gg } });
    expect(preview.json()).toMatchObject({ body: 'Hi Guernsey, spring sale today!', cost: 0, country: 'GG', skip_reason: 'country_not_allowed' });
    const sent = await p.app.inject({ method: 'POST', url: `/v1/campaigns/${id}/preview`, headers: bearer(p.tenant.workspaceKey), payload: { contact_id: a.contactIds[0] } });
    expect(sent.json()).toMatchObject({ cost: 1, country: 'US', skip_reason: null });
  });

  it("the preview's default sample is the first contact of the campaign's audience, not of the workspace", async () => {
    await makeAudience(p, 1, { firstPhone: 8000 }); // another contact of the workspace, created first
    const list = await makeAudience(p, 1, { firstPhone: 8100 });
    const { id } = await createCampaign(p, list.listId);
    const res = await p.app.inject({ method: 'POST', url: `/v1/campaigns/${id}/preview`, headers: bearer(p.tenant.workspaceKey), payload: {} });
    expect(res.statusCode, res.body).toBe(200);
    expect((res.json() as { contact_id: string }).contact_id).toBe(list.contactIds[0]);
  });
});

describe('the live progress stream', () => {
  it('a viewer that sees the campaign ended never gets a count made while it ran (the shared feed keys by status)', async () => {
    let clock = 0;
    const feed = createProgressFeed(async (c) => ({ campaign_id: c.id, status: c.status }) as unknown as Progress, () => clock);
    await feed.next({ id: 'cmp_x', status: 'running' } as CampaignRow);
    clock += 500; // within the first viewer's interval
    expect((await feed.next({ id: 'cmp_x', status: 'completed' } as CampaignRow)).progress.status).toBe('completed');
    expect((await feed.next({ id: 'cmp_x', status: 'running' } as CampaignRow)).progress.status).toBe('running'); // still shared
  });

  it('two viewers of one campaign: both streams end on its completed state', async () => {
    const lastEvent = async (url: string) => {
      const res = await fetch(url, { headers: { authorization: `Bearer ${p.tenant.workspaceKey}` } });
      const events = (await res.text()).split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as { status: string });
      return events.at(-1)!;
    };
    const a = await makeAudience(p, 5, { firstPhone: 9000 });
    const { id } = await createCampaign(p, a.listId, { throttle_mps: 5 });
    const url = `${p.apiUrl}/v1/campaigns/${id}/progress/stream`;
    await campaignAction(p, id, 'start');
    const first = lastEvent(url);
    await new Promise((r) => setTimeout(r, 500));
    const second = lastEvent(url);
    expect((await first).status).toBe('completed');
    expect((await second).status).toBe('completed');
  }, 60_000);
});
