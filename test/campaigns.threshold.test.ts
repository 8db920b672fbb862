import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCampaign, RECENT_SENDS, recentOutcomes } from '../src/campaigns/service.ts';
import { silentLog } from './helpers/app.ts';
import { campaignAction, campaignRow, createCampaign, makeAudience, waitForCampaign } from './helpers/campaigns.ts';
import { grantCredits, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * The error threshold (issue 6): a campaign pauses itself with
 * `error_threshold` when the share of permanent carrier failures among its
 * last 500 sends passes the threshold, and the look-back reads those 500,
 * not the whole campaign.
 */
let p: Pipeline;

beforeAll(async () => {
  // half of all sends refused for good (21211: invalid number)
  p = await startPipeline({ senderMps: 1000, faults: { errors: { '21211': 0.5 } }, seed: 7 });
  await grantCredits(p, 100_000);
});
afterAll(async () => {
  await p?.close();
});

const claimedCount = async (id: string) => {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where campaign_id = ${id} and claimed_at is not null`.execute(p.tdb.db);
  return rows[0]!.n;
};

describe('a campaign whose sends keep failing', () => {
  it('pauses itself with error_threshold, and sends nothing more; without a threshold the same faults let it finish', async () => {
    const audience = await makeAudience(p, 1_500, { firstPhone: 2000 });
    const c = await createCampaign(p, audience.listId, { error_threshold: 0.2, throttle_mps: 50 });
    expect((await campaignAction(p, c.id, 'start')).statusCode).toBe(200);
    const paused = await waitForCampaign(p, c.id, (r) => r.status === 'paused', 30_000);
    expect(paused.pause_reason).toBe('error_threshold');
    const { rows: events } = await sql<{ reason: string; actor: string }>`select reason, actor from campaign_events
      where campaign_id = ${c.id} and event = 'pause'`.execute(p.tdb.db);
    expect(events).toEqual([{ reason: 'error_threshold', actor: 'campaign_check' }]);
    // claims in flight when the pause committed settle; after that nothing more is claimed
    await new Promise((r) => setTimeout(r, 1_500));
    const settled = await claimedCount(c.id);
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await claimedCount(c.id)).toBe(settled);
    expect(settled).toBeLessThan(1_500);

    const calm = await makeAudience(p, 60, { firstPhone: 4000 });
    const free = await createCampaign(p, calm.listId);
    await campaignAction(p, free.id, 'start');
    await waitForCampaign(p, free.id, (r) => r.status === 'completed', 30_000);
    expect((await campaignRow(p, free.id)).pause_reason).toBeNull();
  });
});

describe('the look-back over the last sends', () => {
  it(`counts exactly the last ${RECENT_SENDS} claimed outcomes, reading at most ${RECENT_SENDS} rows per final status`, async () => {
    const audience = await makeAudience(p, 1, { firstPhone: 5000 });
    const c = await createCampaign(p, audience.listId);
    // 6,000 finished messages, claimed one second apart; every seventh a carrier refusal, every eleventh refused for another reason
    await sql`insert into messages (id, organization_id, workspace_id, dedupe_key, producer, campaign_id, purpose, to_number, country,
        from_number, body, encoding, segments, cost, status, status_reason, claimed_at)
      select 'msg_look_' || lpad(i::text, 6, '0'), ${p.tenant.organizationId}, ${p.tenant.workspaceId}, 'look:' || i, 'campaign', ${c.id},
        'marketing', '+14155550000', 'US', '+14155550100', 'x', 'GSM-7', 1, 1,
        case when i % 7 = 0 then 'failed' when i % 11 = 0 then 'failed' when i % 3 = 0 then 'sent' when i % 5 = 0 then 'undelivered' else 'delivered' end,
        case when i % 7 = 0 then 'carrier_error' when i % 11 = 0 then 'attempts_exhausted' end,
        timestamptz '2026-01-01' + make_interval(secs => i)
      from generate_series(1, 6000) i`.execute(p.tdb.db);
    await sql`analyze messages`.execute(p.tdb.db);
    // the plain reading: the last 500 by claim time, whatever their status
    const { rows: truth } = await sql<{ failed: number; total: number }>`
      select count(*) filter (where (status = 'failed' and status_reason = 'carrier_error') or status = 'undelivered')::int as failed, count(*)::int as total
      from (select status, status_reason from messages where campaign_id = ${c.id} and claimed_at is not null
        and status in ('sent', 'delivered', 'undelivered', 'failed') order by claimed_at desc limit 500) r`.execute(p.tdb.db);
    // refused for good (every seventh) or reported undelivered (every fifth of the rest that are not sent or failed)
    const failedForGood = (i: number) => i % 7 === 0 || (i % 11 !== 0 && i % 3 !== 0 && i % 5 === 0);
    const lastFive = Array.from({ length: 500 }, (_, k) => 5_501 + k);
    expect(truth[0]).toEqual({ failed: lastFive.filter(failedForGood).length, total: 500 });
    expect(await recentOutcomes(p.tdb.db, c.id)).toEqual(truth[0]);

    // and how it reads them: from the end of each status's range in the index
    const plan = await p.tdb.db.transaction().execute(async (trx) => {
      await sql`set local enable_seqscan = off`.execute(trx);
      const { rows } = await sql<{ 'QUERY PLAN': unknown }>`explain (format json)
        select status from messages where campaign_id = ${c.id} and status = 'delivered' and claimed_at is not null
        order by claimed_at desc limit ${RECENT_SENDS}`.execute(trx);
      return rows[0]!['QUERY PLAN'];
    });
    const text = JSON.stringify(plan);
    expect(text).toContain('messages_campaign_claimed');
    expect(text).not.toContain('"Node Type":"Sort"');

    // After a resume the look-back starts again: the failures that paused the campaign are still its last
    // 500 sends, and would pause it again at the first check, whatever was fixed since.
    expect(await recentOutcomes(p.tdb.db, c.id, new Date('2026-01-01T01:40:00Z'))).toEqual({ failed: 0, total: 0 }); // the 6,000th claim's second
    const since = new Date(Date.parse('2026-01-01T00:00:00Z') + 5_900_000); // after the 5,900th claim
    expect(await recentOutcomes(p.tdb.db, c.id, since)).toEqual({ failed: [...Array(100).keys()].map((k) => 5_901 + k).filter(failedForGood).length, total: 100 });
    await sql`update campaigns set status = 'running', error_threshold = 0.1 where id = ${c.id}`.execute(p.tdb.db);
    await sql`insert into campaign_events (campaign_id, event, from_status, to_status, reason, actor) values (${c.id}, 'resume', 'paused', 'running', null, 'test')`.execute(p.tdb.db);
    await checkCampaign({ db: p.tdb.db, log: silentLog }, c.id);
    expect((await campaignRow(p, c.id)).status).toBe('running'); // a fifth failed before the resume, nothing since
    await sql`update campaigns set status = 'cancelled' where id = ${c.id}`.execute(p.tdb.db);
  });
});
