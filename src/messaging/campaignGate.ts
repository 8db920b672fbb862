import { sql } from 'kysely';
import type { Db, Tx } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';

/**
 * The link between the pipeline and campaigns: a campaign message may be
 * reserved and claimed only while its campaign is `running` (G6), and when
 * dispatch finds a campaign's messages unaffordable (or its workspace
 * disabled) the campaign pauses itself in the same transaction, so no later,
 * cheaper message of it can slip past the paid-for prefix.
 *
 * Lock order, shared by every transaction that touches a campaign: message
 * rows first, then the account row, then the campaign row. Claims only read
 * the campaign (no lock); a pause first locks the campaign's queued messages,
 * so every claim either committed before the pause or sees it.
 */
export const CAMPAIGN_RUNNING = sql`(m.campaign_id is null or exists (
  select 1 from campaigns cg where cg.id = m.campaign_id and cg.status = 'running'))`;

/**
 * At claim: a campaign that paused itself for want of credits still sends
 * what it already paid for (its reserved prefix); any other pause stops
 * every send not yet handed to the carrier.
 */
export const CAMPAIGN_CLAIMABLE = sql`(m.campaign_id is null or exists (
  select 1 from campaigns cg where cg.id = m.campaign_id
    and (cg.status = 'running' or (cg.status = 'paused' and cg.pause_reason = 'insufficient_credits'))))`;

/** The campaign has ended (cancelled or completed): its stragglers are skipped, never left blocked. */
export const CAMPAIGN_ENDED = sql`(m.campaign_id is not null and exists (
  select 1 from campaigns cg where cg.id = m.campaign_id and cg.status in ('cancelled', 'completed')))`;

export type PauseReason = 'manual' | 'insufficient_credits' | 'workspace_disabled' | 'subscription_inactive' | 'error_threshold';

/** Pause running campaigns (no-op for the others); returns the ids paused. */
export async function pauseCampaigns(
  trx: Tx,
  campaignIds: readonly string[],
  reason: PauseReason,
  actor: string,
  options: { lockMessages?: boolean } = {},
): Promise<string[]> {
  if (campaignIds.length === 0) return [];
  if (options.lockMessages !== false) await lockWaiting(trx, campaignIds);
  const { rows } = await sql<{ id: string }>`
    with p as (
      update campaigns c set status = 'paused', pause_reason = ${reason}, updated_at = now()
      where id = any(${[...campaignIds]}::text[])
        -- a gate that has reopened since the caller decided (its reopening resumed the campaign
        -- already): no pause, which nothing would lift
        and (${reason} <> 'workspace_disabled' or exists (select 1 from workspaces w where w.id = c.workspace_id and not w.sms_enabled))
        and (${reason} <> 'subscription_inactive' or not credence_subscription_ok(c.organization_id))
        and (status = 'running'
          -- a campaign that paused itself for credits still sends its paid-for prefix: a manual pause stops that too
          or (${reason} = 'manual' and status = 'paused' and pause_reason = 'insufficient_credits'))
      returning id, (select status from campaigns o where o.id = c.id) as old_status
    ), ev as (
      insert into campaign_events (campaign_id, event, from_status, to_status, reason, actor)
      select id, 'pause', old_status, 'paused', ${reason}, ${actor} from p
    )
    select id from p`.execute(trx);
  return rows.map((r) => r.id);
}

/** Ask the campaign's check job (completion, error threshold) to look soon: one pending job per campaign. */
export async function scheduleCampaignCheck(trx: Tx, campaignIds: readonly string[], delayMs = 2_000): Promise<void> {
  for (const id of new Set(campaignIds)) {
    await addJob(
      trx,
      'campaign_check',
      { campaignId: id },
      { jobKey: `campaign_check:${id}`, jobKeyMode: 'preserve_run_at', runAt: new Date(Date.now() + delayMs), maxAttempts: 25 },
    );
  }
}

/**
 * After a send batch's outcome committed: have its campaigns looked at
 * (completion, error threshold) about two seconds later, at most once a
 * second per campaign from this process. Outside the outcome transaction on
 * purpose: the check's job row (one job key per campaign) would be updated,
 * and locked until commit, by every outcome step of the campaign, and the
 * job's NOTIFY would serialise their commits. A wake-up lost to a crash is
 * covered by the minute sweep, which looks at every running campaign.
 */
const lastAsked = new WeakMap<Db, Map<string, number>>();
export async function requestCampaignChecks(db: Db, campaignIds: readonly string[], now = Date.now()): Promise<void> {
  let asked = lastAsked.get(db);
  if (asked === undefined) {
    asked = new Map();
    lastAsked.set(db, asked);
  }
  const due = [...new Set(campaignIds)].filter((id) => now - (asked.get(id) ?? 0) >= 1_000);
  if (due.length === 0) return;
  for (const id of due) asked.set(id, now);
  if (asked.size > 10_000) for (const [id, at] of asked) if (now - at > 60_000) asked.delete(id);
  await db.transaction().execute((trx) => scheduleCampaignCheck(trx, due));
}

/**
 * Every claim of these campaigns commits before the pause, or sees it: lock
 * what is queued, and what may become queued meanwhile (being dispatched, or
 * back from the carrier for a retry).
 */
async function lockWaiting(trx: Tx, campaignIds: readonly string[]): Promise<void> {
  await sql`select id from messages where campaign_id = any(${[...campaignIds]}::text[])
    and status in ('planned', 'queued', 'sending') order by id for update`.execute(trx);
}
