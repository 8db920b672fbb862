import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { advanceCampaign } from '../src/campaigns/advance.ts';
import { cancelCampaign, pauseCampaign } from '../src/campaigns/service.ts';
import { silentLog } from './helpers/app.ts';
import { campaignAction, createCampaign, makeAudience } from './helpers/campaigns.ts';
import { eventually, grantCredits, optOutTwoInTurn, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * Campaign transactions that meet the send path's locks (a review found
 * both, 2026-11-24): a user's pause or cancel against an outcome step that
 * locks several numbers' messages in turn (a deadlock: the pause is run
 * again, not failed), and a throttled step that waited for its campaign's
 * row (its next step is timed from when it ran, not from when it began).
 */
let p: Pipeline;
beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000, withWorker: false });
  await grantCredits(p, 100);
});
afterAll(async () => {
  await p?.close();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const action of ['pause', 'cancel'] as const) {
  it(`a ${action} that meets an outcome step opting out two numbers in turn succeeds (it failed: deadlock detected)`, async () => {
    const a = await makeAudience(p, 2, { firstPhone: action === 'pause' ? 4100 : 4200 });
    const { id } = await createCampaign(p, a.listId);
    expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);
    await advanceCampaign({ db: p.tdb.db, log: silentLog }, id); // seq 1 (phones[0]) gets the lower id
    const { rows: ms } = await sql<{ to_number: string }>`select to_number from messages where campaign_id = ${id} order by id`.execute(p.tdb.db);
    const [phoneB, phoneA] = ms.map((m) => m.to_number) as [string, string]; // B's message has the lower id
    const scope = { organizationId: p.tenant.organizationId, workspaceId: p.tenant.workspaceId };
    // A first: its waiting message has the higher id
    const act = action === 'pause' ? pauseCampaign : cancelCampaign;
    expect(await optOutTwoInTurn(p, phoneA, phoneB, () => act(p.tdb.db, scope, id, 'user'))).toEqual(['ok', 'ok']);
  }, 30_000);
}

it('a throttled step that waited for the campaign row does not let the next step run at once', async () => {
  const a = await makeAudience(p, 5, { firstPhone: 4300 });
  const { id } = await createCampaign(p, a.listId, { throttle_mps: 1 });
  expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);
  const deps = { db: p.tdb.db, log: silentLog };
  expect((await advanceCampaign(deps, id)).created).toBe(1);
  await sleep(1_100);
  // something holds the campaign row for a while (a pause, a purchase's resume, a dispatch pausing it)
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let holding!: () => void;
  const held = new Promise<void>((r) => (holding = r));
  const holder = p.tdb.db.transaction().execute(async (trx) => {
    await sql`select id from campaigns where id = ${id} for update`.execute(trx);
    holding();
    await released;
  });
  await held;
  const step2 = advanceCampaign(deps, id);
  await sleep(1_500);
  release();
  await holder;
  expect((await step2).created).toBe(1);
  // the next step is 1 s after this one, not at once
  const { rows } = await sql<{ ahead_ms: number }>`select (extract(epoch from next_advance_at - clock_timestamp()) * 1000)::int as ahead_ms from campaigns where id = ${id}`.execute(p.tdb.db);
  expect(rows[0]!.ahead_ms).toBeGreaterThan(500);
  expect((await advanceCampaign(deps, id)).created).toBe(0);
  await campaignAction(p, id, 'cancel'); // its messages would compete for the next test's credits
}, 30_000);

it("credits that arrive go to the campaign's oldest blocked messages before any it creates after the resume (the paid-for prefix)", async () => {
  const audience = await makeAudience(p, 1_005, { firstPhone: 5000 });
  const { id } = await createCampaign(p, audience.listId);
  const deps = { db: p.tdb.db, log: silentLog };
  // spend all but 3 of the organization's credits
  const { rows: acct } = await sql<{ available: number }>`select (allowance_available + purchased_available)::int as available from credit_accounts
    where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
  const credits = await import('../src/credits/index.ts');
  await credits.adjust(p.tdb.db, { organizationId: p.tenant.organizationId, amount: -(acct[0]!.available - 3), reason: 'test', idempotencyKey: `spend-prefix-${id}`, actor: { type: 'system', id: 'test' } });
  expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);
  await advanceCampaign(deps, id); // recipients 1–1,000
  const messaging = await import('../src/messaging/index.ts');
  await messaging.dispatchOrganization(p.tdb.db, p.tenant.organizationId); // 1–3 paid, the rest blocked: paused for credits
  const { rows: paused } = await sql<{ status: string }>`select status from campaigns where id = ${id}`.execute(p.tdb.db);
  expect(paused[0]!.status).toBe('paused');
  // 3 more credits arrive: the campaign resumes
  await p.tdb.db.transaction().execute(async (trx) => {
    await credits.grant(trx, { organizationId: p.tenant.organizationId, amount: 3, idempotencyKey: `grant-prefix-${id}`, actor: { type: 'system', id: 'test' } });
    const { resumeCampaignsForCredits } = await import('../src/campaigns/service.ts');
    await resumeCampaignsForCredits(trx, p.tenant.organizationId, 'test');
  });
  // the resumed advance and an ordinary dispatch run come before the dispatch of the blocked ones
  await advanceCampaign(deps, id);
  await messaging.dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  await messaging.dispatchOrganization(p.tdb.db, p.tenant.organizationId, { includeBlocked: true });
  // (the pipeline's own dispatcher may be finishing a run of its own: wait for the six)
  const paid = await eventually(async () => {
    const { rows } = await sql<{ seq: number }>`select split_part(dedupe_key, ':', 3)::int as seq from messages
      where campaign_id = ${id} and reservation_id is not null order by 1`.execute(p.tdb.db);
    return rows.length >= 6 ? rows.map((r) => r.seq) : undefined;
  }, 15_000, 'six paid messages');
  expect(paid).toEqual([1, 2, 3, 4, 5, 6]);
  await campaignAction(p, id, 'cancel');
}, 60_000);

it('a campaign resumed by hand without credits pauses again at the dispatch of its blocked messages (its advance waits for them)', async () => {
  const audience = await makeAudience(p, 5, { firstPhone: 6100 });
  const { id } = await createCampaign(p, audience.listId);
  const deps = { db: p.tdb.db, log: silentLog };
  const credits = await import('../src/credits/index.ts');
  const messaging = await import('../src/messaging/index.ts');
  const { rows: acct } = await sql<{ available: number }>`select (allowance_available + purchased_available)::int as available from credit_accounts
    where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
  await credits.adjust(p.tdb.db, { organizationId: p.tenant.organizationId, amount: -(acct[0]!.available - 2), reason: 'test', idempotencyKey: `spend-resume-${id}`, actor: { type: 'system', id: 'test' } });
  expect((await campaignAction(p, id, 'start')).statusCode).toBe(200);
  await advanceCampaign(deps, id);
  await messaging.dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  const status = async () => (await sql<{ status: string; pause_reason: string | null }>`select status, pause_reason from campaigns where id = ${id}`.execute(p.tdb.db)).rows[0]!;
  expect(await status()).toEqual({ status: 'paused', pause_reason: 'insufficient_credits' });
  expect((await campaignAction(p, id, 'resume')).statusCode).toBe(200);
  expect((await advanceCampaign(deps, id)).created).toBe(0); // waits for the blocked ones
  await messaging.dispatchOrganization(p.tdb.db, p.tenant.organizationId, { includeBlocked: true });
  expect(await status()).toEqual({ status: 'paused', pause_reason: 'insufficient_credits' });
  await campaignAction(p, id, 'cancel');
}, 30_000);
