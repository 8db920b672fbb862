import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './helpers/app.ts';
import { campaignAction, campaignRow, createCampaign, makeAudience, waitForCampaign } from './helpers/campaigns.ts';
import { eventually, grantCredits, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * The workspace's SMS switch (a gate of issue 4, a pause reason of issue 6):
 * off stops every claim that starts after its commit and pauses the workspace's
 * campaigns with `workspace_disabled`; on resumes them, and nothing is sent
 * twice or lost.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000 });
  await grantCredits(p, 10_000);
});
afterAll(async () => {
  await p?.close();
});

const setSms = (key: string, enabled: unknown, extra: Record<string, unknown> = {}) =>
  p.app.inject({
    method: 'PATCH',
    url: `/v1/workspaces/${p.tenant.workspaceId}`,
    headers: bearer(key),
    payload: { sms_enabled: enabled, ...extra },
  });

const claimed = async (campaignId: string) => {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where campaign_id = ${campaignId} and claimed_at is not null`.execute(
    p.tdb.db,
  );
  return rows[0]!.n;
};

describe('PATCH /v1/workspaces/:id sms_enabled', () => {
  it('is for organization admins: a workspace key is refused, a bad body names its field, and neither changes anything', async () => {
    const refused = await setSms(p.tenant.workspaceKey, false);
    expect(refused.statusCode).toBe(403);
    const bad = await setSms(p.tenant.orgKey, 'no');
    expect(bad.statusCode).toBe(422);
    expect(bad.headers['content-type']).toContain('application/problem+json');
    expect(JSON.stringify(bad.json())).toContain('sms_enabled');
    const { rows } = await sql<{ sms_enabled: boolean }>`select sms_enabled from workspaces where id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
    expect(rows[0]!.sms_enabled).toBe(true);
  });

  it('off: nothing more is claimed and the campaign pauses with workspace_disabled; on: it resumes and every recipient gets exactly one message', async () => {
    const audience = await makeAudience(p, 300, { firstPhone: 3000 });
    const c = await createCampaign(p, audience.listId, { throttle_mps: 40 });
    expect((await campaignAction(p, c.id, 'start')).statusCode).toBe(200);
    await eventually(async () => ((await claimed(c.id)) >= 40 ? true : undefined), 20_000, 'first sends');

    const off = await setSms(p.tenant.orgKey, false, { reason: 'suspected abuse' });
    expect(off.statusCode).toBe(200);
    expect(off.json()).toMatchObject({ id: p.tenant.workspaceId, sms_enabled: false });
    // claims that committed before the switch settle; after that nothing more is claimed
    await new Promise((r) => setTimeout(r, 1_500));
    const settled = await claimed(c.id);
    const paused = await waitForCampaign(p, c.id, (r) => r.status === 'paused', 15_000);
    expect(paused.pause_reason).toBe('workspace_disabled');
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await claimed(c.id)).toBe(settled);
    expect(settled).toBeLessThan(300);

    // the same switch again changes nothing and is not audited twice
    expect((await setSms(p.tenant.orgKey, false)).statusCode).toBe(200);
    const on = await setSms(p.tenant.orgKey, true, { reason: 'cleared' });
    expect(on.statusCode).toBe(200);
    expect(on.json()).toMatchObject({ sms_enabled: true });
    await waitForCampaign(p, c.id, (r) => r.status === 'completed', 60_000);

    const sent = p.simulator.log().filter((m) => audience.phones.includes(m.to));
    expect(sent).toHaveLength(300);
    expect(new Set(sent.map((m) => m.to)).size).toBe(300);
    expect((await campaignRow(p, c.id)).status).toBe('completed');
    const { rows: audit } = await sql<{ action: string; reason: string | null }>`select action, reason from audit_log
      where target_id = ${p.tenant.workspaceId} and action like 'workspace.sms_%' order by id`.execute(p.tdb.db);
    expect(audit).toEqual([
      { action: 'workspace.sms_disable', reason: 'suspected abuse' },
      { action: 'workspace.sms_enable', reason: 'cleared' },
    ]);
    const { rows: events } = await sql<{ event: string; reason: string | null }>`select event, reason from campaign_events
      where campaign_id = ${c.id} and event in ('pause', 'resume') order by at, event`.execute(p.tdb.db);
    expect(events).toEqual([
      { event: 'pause', reason: 'workspace_disabled' },
      { event: 'resume', reason: 'workspace_enabled' },
    ]);
  }, 120_000);
});
