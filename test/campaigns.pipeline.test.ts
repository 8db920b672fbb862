import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { bearer } from './helpers/app.ts';
import { campaignAction, campaignRow, createCampaign, inFlight, makeAudience, recipients, waitForCampaign } from './helpers/campaigns.ts';
import { eventually, grantCredits, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * Campaigns through the real pipeline and the carrier simulator, whose own
 * log is the ground truth: exactly the paid-for prefix goes, the campaign
 * pauses itself, credits resume it, and nobody gets a second copy.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000 });
});
afterAll(async () => {
  await p?.close();
});

const copiesTo = (phone: string) => p.simulator.log().filter((e) => e.to === phone).length;

async function progress(id: string) {
  const res = await p.app.inject({ method: 'GET', url: `/v1/campaigns/${id}/progress`, headers: bearer(p.tenant.workspaceKey) });
  return res.json() as { by_status: Record<string, number>; done: number; audience_size: number; credits: { reserved: number; captured: number } };
}

/** Take the organization's available credits down to `left` (an operator rollback). */
async function spendAllBut(left: number): Promise<void> {
  const { rows } = await sql<{ available: number }>`select (allowance_available + purchased_available)::int as available
    from credit_accounts where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
  const spare = (rows[0]?.available ?? 0) - left;
  if (spare > 0) {
    await credits.adjust(p.tdb.db, { organizationId: p.tenant.organizationId, amount: -spare, reason: 'test', idempotencyKey: `spend-${Date.now()}-${left}`, actor: { type: 'system', id: 'test' } });
  }
}

describe('the quote', () => {
  it('prices only the recipients the campaign would charge: without consent is skipped for free (the quote overstated the cost)', async () => {
    const withConsent = await makeAudience(p, 3, { firstPhone: 6600 });
    const without = await makeAudience(p, 3, { firstPhone: 6700, consent: false });
    await sql`insert into contact_list_members (list_id, contact_id) select ${withConsent.listId}, unnest(${without.contactIds}::text[])`.execute(p.tdb.db);
    await grantCredits(p, 3);
    const { id } = await createCampaign(p, withConsent.listId);
    const quote = (await p.app.inject({ method: 'GET', url: `/v1/campaigns/${id}/quote`, headers: bearer(p.tenant.workspaceKey) })).json() as Record<string, unknown>;
    // the balance covers every recipient that costs anything: not "3 of 6"
    expect(quote).toMatchObject({ recipients: 6, billable: 3, skipped: 3, total_credits: 3, covered: 3, summary: '3 of 3' });
    expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);
    await waitForCampaign(p, id, (c) => c.status === 'completed', 30_000);
    const settled = await eventually(async () => {
      const now = await progress(id);
      return now.credits.reserved === 0 ? now : undefined;
    }, 10_000, 'captures');
    expect(settled.credits.captured).toBe(quote.total_credits);
  });
});

describe('credits run out mid-campaign', () => {
  it('sends exactly the affordable prefix, pauses, resumes on a grant, and ends with one copy per recipient', async () => {
    const audience = await makeAudience(p, 50, { firstPhone: 2000 });
    await grantCredits(p, 30);
    const { id } = await createCampaign(p, audience.listId);

    const quote = await p.app.inject({ method: 'GET', url: `/v1/campaigns/${id}/quote`, headers: bearer(p.tenant.workspaceKey) });
    expect(quote.json()).toMatchObject({ recipients: 50, billable: 50, skipped: 0, total_credits: 50, covered: 30, summary: '30 of 50', by_country: [{ country: 'US', recipients: 50 }] });

    expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);
    const paused = await waitForCampaign(p, id, (c) => c.status === 'paused');
    expect(paused.pause_reason).toBe('insufficient_credits');
    await eventually(async () => ((await inFlight(p, id)) === 0 ? true : undefined), 20_000, 'in-flight sends to settle');

    // The simulator has exactly recipients 1…30, once each.
    const recs = await recipients(p, id);
    expect(recs).toHaveLength(50);
    for (const r of recs) expect(copiesTo(r.phone), `seq ${r.seq}`).toBe(r.seq <= 30 ? 1 : 0);
    const bodies = p.simulator.log().filter((e) => e.to === recs[0]!.phone).map((e) => e.body);
    expect(bodies).toEqual([`Hi ${String(recs[0]!.variables.first_name)}, spring sale today!`]);
    // paused for credits, the quote is for the rest: what a purchase must cover
    const rest = await p.app.inject({ method: 'GET', url: `/v1/campaigns/${id}/quote`, headers: bearer(p.tenant.workspaceKey) });
    expect(rest.json()).toMatchObject({ recipients: 20, billable: 20, total_credits: 20, covered: 0, summary: '0 of 20' });

    // Credits arrive through the operator API: the campaign resumes by itself.
    const grant = await p.app.inject({
      method: 'POST',
      url: `/v1/organizations/${p.tenant.organizationId}/credits/grants`,
      headers: bearer(p.op),
      payload: { amount: 100, reason: 'top-up', idempotency_key: `topup-${id}` },
    });
    expect(grant.statusCode).toBe(201);
    await waitForCampaign(p, id, (c) => c.status === 'completed', 60_000);
    for (const r of recs) expect(copiesTo(r.phone), `seq ${r.seq}`).toBe(1);
    // captures are applied by the drain, moments after each outcome
    const prog = await eventually(async () => {
      const now = await progress(id);
      return now.credits.reserved === 0 ? now : undefined;
    }, 10_000, 'every capture applied');
    expect(prog.done).toBe(50);
    expect(Object.values(prog.by_status).reduce((a, b) => a + b, 0)).toBe(50);
    expect(prog.credits).toEqual({ reserved: 0, captured: 50 });
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 120_000);
});

describe('the audience is snapshotted at start', () => {
  it('contacts added, removed or renamed after start change nothing', async () => {
    const audience = await makeAudience(p, 5, { firstPhone: 3000 });
    await grantCredits(p, 100);
    await p.stopWorker();
    try {
      const { id } = await createCampaign(p, audience.listId);
      expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);
      // edit the audience after start
      await sql`update contacts set first_name = 'Changed' where id = ${audience.contactIds[0]!}`.execute(p.tdb.db);
      await sql`delete from contact_list_members where contact_id = ${audience.contactIds[1]!}`.execute(p.tdb.db);
      const extra = await makeAudience(p, 1, { firstPhone: 3100 });
      await sql`insert into contact_list_members (list_id, contact_id) values (${audience.listId}, ${extra.contactIds[0]!})`.execute(p.tdb.db);
      await p.startWorker();
      await waitForCampaign(p, id, (c) => c.status === 'completed', 60_000);
      const recs = await recipients(p, id);
      expect(recs.map((r) => r.phone).sort()).toEqual([...audience.phones].sort());
      expect(copiesTo(extra.phones[0]!)).toBe(0);
      expect(copiesTo(audience.phones[1]!)).toBe(1);
      expect(p.simulator.log().filter((e) => e.to === audience.phones[0]).map((e) => e.body)).toEqual(['Hi Name0, spring sale today!']);
    } finally {
      if (p.worker === undefined) await p.startWorker();
    }
  }, 90_000);
});

describe('STOP mid-campaign', () => {
  it('a recipient who texts STOP while the campaign is sending gets nothing more; the campaign completes around them', async () => {
    const audience = await makeAudience(p, 30, { firstPhone: 7000 });
    await grantCredits(p, 100);
    await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(p.tenant.workspaceKey), payload: { phone_number: '+14155550199', mps: 5 } });
    const { id } = await createCampaign(p, audience.listId, { from: '+14155550199' });
    await campaignAction(p, id, 'start');
    await eventually(async () => (p.simulator.log().filter((e) => e.from === '+14155550199').length >= 3 ? true : undefined), 20_000, 'first sends');
    const recs = await recipients(p, id);
    const last = recs.at(-1)!;
    expect(copiesTo(last.phone)).toBe(0);
    expect(await p.simulator.sendInbound({ from: last.phone, to: '+14155550199', body: 'STOP' })).toBe(200);
    await waitForCampaign(p, id, (c) => c.status === 'completed', 60_000);
    expect(copiesTo(last.phone)).toBe(0);
    const { rows } = await sql<{ status: string; status_reason: string | null }>`select status, status_reason from messages
      where campaign_id = ${id} and to_number = ${last.phone}`.execute(p.tdb.db);
    expect(rows).toEqual([{ status: 'skipped', status_reason: 'no_consent' }]);
    for (const r of recs.slice(0, -1)) expect(copiesTo(r.phone), `seq ${r.seq}`).toBe(1);
  }, 90_000);
});

describe('lifecycle', () => {
  it('pause stops sends before the next claim; cancel skips the rest and releases their credits', async () => {
    const audience = await makeAudience(p, 40, { firstPhone: 4000 });
    await grantCredits(p, 100);
    // a slow sender: most messages wait, queued, while we pause
    await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(p.tenant.workspaceKey), payload: { phone_number: '+14155550188', mps: 5 } });
    const { id } = await createCampaign(p, audience.listId, { from: '+14155550188' });
    await campaignAction(p, id, 'start');
    await eventually(async () => (p.simulator.log().filter((e) => e.from === '+14155550188').length >= 3 ? true : undefined), 20_000, 'first sends');
    expect((await campaignAction(p, id, 'pause')).statusCode).toBe(200);
    const claimsAt = async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from message_events e join messages m on m.id = e.message_id
        where m.campaign_id = ${id} and e.event = 'claim'`.execute(p.tdb.db);
      return rows[0]!.n;
    };
    const atPause = await claimsAt();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await claimsAt()).toBe(atPause);
    expect((await campaignAction(p, id, 'pause')).statusCode).toBe(409);

    const cancel = await campaignAction(p, id, 'cancel');
    expect(cancel.statusCode).toBe(200);
    expect(cancel.json.status).toBe('cancelled');
    await eventually(async () => ((await inFlight(p, id)) === 0 ? true : undefined), 20_000, 'in-flight sends to settle');
    // the sent ones' captures are applied by the drain, moments after their outcome
    const prog = await eventually(async () => {
      const now = await progress(id);
      return now.credits.reserved === 0 ? now : undefined;
    }, 10_000, 'nothing left reserved');
    expect(prog.by_status.skipped).toBeGreaterThan(0);
    const sent = p.simulator.log().filter((e) => e.from === '+14155550188').length;
    // claimed before the pause: sent, or withdrawn if it was still waiting for its rate slot
    expect(sent).toBeLessThanOrEqual(atPause);
    expect(sent).toBeGreaterThanOrEqual(3);
    expect((await campaignRow(p, id)).status).toBe('cancelled');
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 90_000);

  it('refuses bad input with the field named, and another tenant cannot see the campaign', async () => {
    const bad = await p.app.inject({
      method: 'POST',
      url: '/v1/campaigns',
      headers: bearer(p.tenant.workspaceKey),
      payload: { name: 'x', body: 'Hi {{first_name', audience: { type: 'list', id: 'lst_nope' } },
    });
    expect(bad.statusCode).toBe(422);
    expect((bad.json() as { errors: { field: string }[] }).errors[0]!.field).toBe('body');
    const audience = await makeAudience(p, 1, { firstPhone: 5000 });
    const { id } = await createCampaign(p, audience.listId);
    const other = await import('./helpers/app.ts').then((m) => m.createTenant(p.app, p.op, 'Other Co'));
    const res = await p.app.inject({ method: 'GET', url: `/v1/campaigns/${id}`, headers: bearer(other.workspaceKey) });
    expect(res.statusCode).toBe(404);
    const start = await p.app.inject({ method: 'POST', url: `/v1/campaigns/${id}/start`, headers: bearer(other.workspaceKey) });
    expect(start.statusCode).toBe(404);
  });
});

describe('manual pause of a campaign that paused itself for credits', () => {
  it('stops its paid-for prefix too, and credits arriving do not resume it', async () => {
    const audience = await makeAudience(p, 20, { firstPhone: 9000 });
    // spend everything but 10: the campaign pays for 10 of 20, then pauses itself
    await spendAllBut(10);
    await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(p.tenant.workspaceKey), payload: { phone_number: '+14155550133', mps: 2 } });
    const { id } = await createCampaign(p, audience.listId, { from: '+14155550133' });
    await campaignAction(p, id, 'start');
    await waitForCampaign(p, id, (c) => c.status === 'paused' && c.pause_reason === 'insufficient_credits');
    const manual = await campaignAction(p, id, 'pause');
    expect(manual.statusCode).toBe(200);
    expect(manual.json.pause_reason).toBe('manual');
    const claims = async () => {
      const { rows: r } = await sql<{ n: number }>`select count(*)::int as n from message_events e join messages m on m.id = e.message_id
        where m.campaign_id = ${id} and e.event = 'claim'`.execute(p.tdb.db);
      return r[0]!.n;
    };
    const claimedAtPause = await claims();
    expect(claimedAtPause).toBeLessThan(10);
    const grant = await p.app.inject({
      method: 'POST',
      url: `/v1/organizations/${p.tenant.organizationId}/credits/grants`,
      headers: bearer(p.op),
      payload: { amount: 100, reason: 'top-up', idempotency_key: `manual-pause-${id}` },
    });
    expect(grant.statusCode).toBe(201);
    await new Promise((r) => setTimeout(r, 2_500));
    // nothing is claimed after the pause; what was claimed and still waiting for its rate slot is withdrawn
    expect(await claims()).toBe(claimedAtPause);
    expect(p.simulator.log().filter((e) => e.from === '+14155550133').length).toBeLessThanOrEqual(claimedAtPause);
    expect((await campaignRow(p, id)).status).toBe('paused');
  }, 60_000);
});

describe('credits that arrived before the pause for credits committed', () => {
  it('the sweep resumes the campaign once the credits cover a blocked message, not before', async () => {
    const audience = await makeAudience(p, 12, { firstPhone: 9100 });
    await spendAllBut(4);
    const { id } = await createCampaign(p, audience.listId);
    await campaignAction(p, id, 'start');
    await waitForCampaign(p, id, (c) => c.status === 'paused' && c.pause_reason === 'insufficient_credits');
    await eventually(async () => ((await inFlight(p, id)) === 0 ? true : undefined), 20_000, 'the paid prefix to settle');
    const { sweepCampaigns } = await import('../src/campaigns/index.ts');
    // no credits yet: the sweep leaves it paused
    await p.tdb.db.transaction().execute((trx) => sweepCampaigns(trx));
    expect((await campaignRow(p, id)).status).toBe('paused');
    // The grant commits with no resume of its own (as when its resume ran
    // before the pause committed): only the sweep can see it.
    await grantCredits(p, 50);
    expect((await campaignRow(p, id)).status).toBe('paused');
    await p.tdb.db.transaction().execute((trx) => sweepCampaigns(trx));
    await waitForCampaign(p, id, (c) => c.status === 'completed', 60_000);
    for (const phone of audience.phones) expect(copiesTo(phone), phone).toBe(1);
  }, 90_000);
});
