import { sql } from 'kysely';
import { audienceQuery } from '../contacts/index.ts';
import { type Db, type DbOrTx, transactionRetrying, type Tx } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';
import * as messaging from '../messaging/index.ts';
import { DomainError, notFound, validationError } from '../shared/errors.ts';
import { parseDateTime } from '../shared/dates.ts';
import { newId } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import { scheduleAdvance, scheduleCheck } from './advance.ts';
import { applyCampaignEvent, type CampaignRow, findCampaign, insertCampaign, snapshotRecipients } from './campaigns.store.ts';
import { errorThresholdExceeded } from './lifecycle.ts';
import { parseTemplate } from './template.ts';

export interface CampaignInput {
  name: string;
  body: string;
  audience: { type: 'list' | 'segment'; id: string };
  purpose?: CampaignRow['purpose'];
  from?: string;
  scheduled_at?: string;
  throttle_mps?: number | null;
  auto_resume?: boolean;
  error_threshold?: number | null;
}

type Scope = { organizationId: string; workspaceId: string };

export async function createCampaign(db: Db, scope: Scope, input: CampaignInput, actor: string): Promise<CampaignRow> {
  const parsed = parseTemplate(input.body);
  if (!parsed.ok) throw validationError('body', parsed.reason);
  // blank with no placeholder: every recipient would be skipped as empty_body, and the campaign "complete"
  if (parsed.names.length === 0 && input.body.trim() === '') throw validationError('body', 'is blank: write the message, or a placeholder');
  let scheduledAt: Date | null = null;
  if (input.scheduled_at !== undefined) {
    scheduledAt = parseDateTime('scheduled_at', input.scheduled_at);
  }
  await audienceQuery(db, scope.workspaceId, input.audience).catch((err: unknown) => {
    if (err instanceof DomainError && err.code === 'not_found') throw validationError('audience.id', `no such ${input.audience.type} in this workspace`);
    throw err;
  });
  const from = await messaging.resolveSender(db, scope.workspaceId, input.from);
  return insertCampaign(
    db,
    {
      id: newId('cmp'),
      organization_id: scope.organizationId,
      workspace_id: scope.workspaceId,
      name: input.name,
      body_template: input.body,
      purpose: input.purpose ?? 'marketing',
      audience_type: input.audience.type,
      audience_id: input.audience.id,
      from_number: from,
      scheduled_at: scheduledAt,
      throttle_mps: input.throttle_mps ?? null,
      auto_resume: input.auto_resume ?? true,
      error_threshold: input.error_threshold ?? null,
    },
    actor,
  );
}

export async function campaignInScope(
  db: DbOrTx,
  scope: { organizationId: string; workspaceId?: string },
  id: string,
  options: { lock?: boolean } = {},
): Promise<CampaignRow> {
  const c = await findCampaign(db, id, options);
  if (c === undefined || c.organization_id !== scope.organizationId || (scope.workspaceId !== undefined && c.workspace_id !== scope.workspaceId)) {
    throw notFound('Campaign');
  }
  return c;
}

const conflict = (c: CampaignRow, action: string) => new DomainError('conflict', `A ${c.status} campaign cannot be ${action}.`, { extra: { campaign_status: c.status } });

/** Snapshot the audience into numbered recipients and start advancing (in the caller's transaction, campaign row locked). */
async function begin(trx: Tx, c: CampaignRow, actor: string): Promise<CampaignRow> {
  const audience = await audienceQuery(trx, c.workspace_id, { type: c.audience_type, id: c.audience_id });
  const size = await snapshotRecipients(trx, c.id, audience);
  const started = await applyCampaignEvent(trx, c.id, 'start', { actor, set: sql`audience_size = ${size}, started_at = now()` });
  if (started === undefined) throw conflict(c, 'started');
  await scheduleAdvance(trx, c.id);
  return started;
}

/**
 * Start a draft, or schedule it when its scheduled_at is ahead. `now` starts
 * a draft or a scheduled campaign at once (a scheduled one's start job then
 * finds it running); without it a second start of a scheduled campaign is a
 * 409, so that a retried request never sends tomorrow's campaign today.
 */
export async function startCampaign(db: Db, scope: Scope, id: string, actor: string, options: { now?: boolean } = {}): Promise<CampaignRow> {
  return db.transaction().execute(async (trx) => {
    const c = await campaignInScope(trx, scope, id, { lock: true });
    if (c.status === 'scheduled' && options.now === true) return begin(trx, c, actor);
    if (c.status !== 'draft') throw conflict(c, 'started');
    if (c.scheduled_at !== null && c.scheduled_at.getTime() > Date.now() && options.now !== true) {
      const scheduled = await applyCampaignEvent(trx, c.id, 'schedule', { actor });
      await addJob(trx, 'campaign_start', { campaignId: c.id }, { runAt: c.scheduled_at, jobKey: `campaign_start:${c.id}`, maxAttempts: 25 });
      return scheduled!;
    }
    return begin(trx, c, actor);
  });
}

/** The `campaign_start` job: a scheduled campaign's time has come. */
export async function startScheduled(db: Db, campaignId: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const c = await findCampaign(trx, campaignId, { lock: true });
    if (c?.status === 'scheduled') await begin(trx, c, 'scheduler');
  });
}

export async function pauseCampaign(db: Db, scope: Scope, id: string, actor: string): Promise<CampaignRow> {
  return transactionRetrying(db, async (trx) => {
    const c = await campaignInScope(trx, scope, id);
    const paused = await messaging.pauseCampaigns(trx, [id], 'manual', actor);
    if (paused.length === 0) throw conflict(c, 'paused');
    return (await findCampaign(trx, id))!;
  });
}

export async function resumeCampaign(db: Db, scope: Scope, id: string, actor: string): Promise<CampaignRow> {
  return transactionRetrying(db, async (trx) => {
    const c = await campaignInScope(trx, scope, id);
    const resumed = await resumeInTx(trx, c.id, actor);
    if (resumed === undefined) throw conflict(c, 'resumed');
    await messaging.scheduleDispatch(trx, c.organization_id, { includeBlocked: true });
    return resumed;
  });
}

async function resumeInTx(trx: Tx, id: string, actor: string, reason?: string, pausedFor?: string): Promise<CampaignRow | undefined> {
  const resumed = await applyCampaignEvent(trx, id, 'resume', { actor, reason: reason ?? null, ...(pausedFor !== undefined && { pausedFor }) });
  if (resumed !== undefined) await scheduleAdvance(trx, id);
  return resumed;
}

/**
 * Credits arrived (a purchase, a grant): resume every campaign of the
 * organization that paused for want of them and has auto_resume on. The
 * caller wakes dispatch for the blocked messages in the same transaction.
 */
export async function resumeCampaignsForCredits(trx: Tx, organizationId: string, actor: string): Promise<string[]> {
  return resumePausedFor(trx, { organizationId }, 'insufficient_credits', actor, 'credits_added', true);
}

/** The subscription is good again: campaigns it paused reopen (whatever their auto_resume). */
export async function resumeCampaignsForSubscription(trx: Tx, organizationId: string, actor: string): Promise<string[]> {
  return resumePausedFor(trx, { organizationId }, 'subscription_inactive', actor, 'subscription_active', false);
}

/** The workspace's SMS is on again: campaigns its switch paused reopen (whatever their auto_resume). */
export async function resumeCampaignsForWorkspace(trx: Tx, workspaceId: string, actor: string): Promise<string[]> {
  return resumePausedFor(trx, { workspaceId }, 'workspace_disabled', actor, 'workspace_enabled', false);
}

async function resumePausedFor(
  trx: Tx,
  owner: { organizationId: string } | { workspaceId: string },
  pauseReason: string,
  actor: string,
  why: string,
  autoResumeOnly: boolean,
): Promise<string[]> {
  const whose = 'workspaceId' in owner ? sql`workspace_id = ${owner.workspaceId}` : sql`organization_id = ${owner.organizationId}`;
  const { rows } = await sql<{ id: string }>`select id from campaigns where ${whose}
    and status = 'paused' and pause_reason = ${pauseReason} ${autoResumeOnly ? sql`and auto_resume` : sql``} order by id`.execute(trx);
  const out: string[] = [];
  // the reason is checked again as each is resumed: a manual pause that committed since must stay
  for (const r of rows) if (await resumeInTx(trx, r.id, actor, why, pauseReason)) out.push(r.id);
  return out;
}

/**
 * Cancel: every message not yet handed to the carrier is skipped and its
 * reservation released, then the campaign is cancelled — one transaction,
 * message rows first (the lock order every campaign transaction follows).
 */
export async function cancelCampaign(db: Db, scope: Scope, id: string, actor: string): Promise<CampaignRow> {
  return transactionRetrying(db, async (trx) => {
    const c = await campaignInScope(trx, scope, id);
    if (c.status === 'completed' || c.status === 'cancelled') throw conflict(c, 'cancelled');
    const { rows } = await sql<messaging.MessageRow>`select * from messages where campaign_id = ${id}
      and status in ('planned', 'queued', 'deferred', 'blocked') order by id for update`.execute(trx);
    const moved = await messaging.applyEventTo(
      trx,
      'skip',
      rows.map((m) => ({ id: m.id, patch: { reason: 'campaign_cancelled', reservation_id: null } })),
    );
    const movedIds = new Set(moved.map((m) => m.id));
    await messaging.releaseFor(
      trx,
      rows.filter((m) => movedIds.has(m.id)),
      'campaign cancelled',
    );
    const cancelled = await applyCampaignEvent(trx, id, 'cancel', { actor, set: sql`completed_at = now()` });
    if (cancelled === undefined) throw conflict(c, 'cancelled');
    return cancelled;
  });
}

const STALLED_ADVANCE_MS = 30_000;

/** Messages of a campaign that are not done yet. */
const PENDING = ['planned', 'queued', 'sending', 'deferred', 'blocked', 'unknown'];

/**
 * The `campaign_check` job: complete a running campaign whose every
 * recipient's message is done, and pause one whose recent permanent
 * failures pass its error threshold.
 */
export async function checkCampaign(deps: { db: Db; log: Logger }, campaignId: string): Promise<void> {
  await deps.db.transaction().execute(async (trx) => {
    const c = await findCampaign(trx, campaignId);
    if (c === undefined || c.status !== 'running') return;
    if (c.error_threshold !== null) {
      // Counted from the last resume: the sends that passed the threshold are still the last 500 when
      // someone resumes, and would pause the campaign again at the first check, whatever was fixed since.
      const { rows: resumes } = await sql<{ at: Date | null }>`select max(at) as at from campaign_events
        where campaign_id = ${c.id} and event = 'resume'`.execute(trx);
      const recent = await recentOutcomes(trx, c.id, resumes[0]?.at ?? undefined);
      if (errorThresholdExceeded(recent, c.error_threshold)) {
        await messaging.pauseCampaigns(trx, [c.id], 'error_threshold', 'campaign_check');
        deps.log.warn({ campaign_id: c.id, ...recent }, 'campaign paused: error threshold passed');
        return;
      }
    }
    if (c.audience_size === null) return;
    if (c.cursor < c.audience_size) {
      // An advance job held by a worker that died stays locked for hours: when
      // the cursor has not moved for a while, add one (advance works from the
      // cursor under the row lock, so an extra one is harmless).
      if (Date.now() - c.updated_at.getTime() > STALLED_ADVANCE_MS) await scheduleAdvance(trx, c.id);
      return;
    }
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages
      where campaign_id = ${c.id} and status = any(${PENDING}::text[])`.execute(trx);
    if (rows[0]!.n > 0) {
      await scheduleCheck(trx, c.id, 5_000);
      return;
    }
    const { rows: made } = await sql<{ n: number }>`select count(*)::int as n from messages where campaign_id = ${c.id}`.execute(trx);
    if (made[0]!.n < c.audience_size) return; // the advance has not created them all (it will check again)
    await applyCampaignEvent(trx, c.id, 'complete', { actor: 'campaign_check', set: sql`completed_at = now()` });
  });
}

/** How many sends the error threshold looks back over. */
export const RECENT_SENDS = 500;
const FINISHED = ['sent', 'delivered', 'undelivered', 'failed'] as const;

/**
 * The campaign's last RECENT_SENDS claimed messages that have an outcome,
 * and how many of them failed for good at the carrier: refused with a
 * permanent error, or taken and then reported undelivered or failed by its
 * status callback (filtering, unknown or landline numbers: what the
 * threshold is for; counting only the refusals let a campaign whose
 * messages the carrier filtered run to the end). Each final status is
 * read from the end of its range in (campaign_id, status, claimed_at), so a
 * check costs the same at the millionth send as at the first.
 */
export async function recentOutcomes(db: DbOrTx, campaignId: string, since?: Date): Promise<{ failed: number; total: number }> {
  const after = since === undefined ? sql`claimed_at is not null` : sql`claimed_at > ${since}`;
  const branches = FINISHED.map(
    (status) => sql`(select status, status_reason, claimed_at from messages
      where campaign_id = ${campaignId} and status = ${status} and ${after}
      order by claimed_at desc limit ${RECENT_SENDS})`,
  );
  const { rows } = await sql<{ failed: number; total: number }>`
    select count(*) filter (where (status = 'failed' and status_reason = 'carrier_error') or status = 'undelivered')::int as failed,
      count(*)::int as total
    from (select status, status_reason from (${sql.join(branches, sql` union all `)}) u
      order by claimed_at desc limit ${RECENT_SENDS}) recent`.execute(db);
  return rows[0]!;
}

/** The sweep's share: look at every running campaign now and then (completion, thresholds). */
export async function sweepCampaigns(trx: Tx): Promise<void> {
  const { rows } = await sql<{ id: string }>`select id from campaigns where status = 'running'`.execute(trx);
  for (const r of rows) await scheduleCheck(trx, r.id, 0);
  // A pause for the subscription that raced its reopening (the reopening
  // could not see it yet): resume it now that the gate is open.
  const { rows: reopened } = await sql<{ organization_id: string }>`select distinct organization_id from campaigns
    where status = 'paused' and pause_reason = 'subscription_inactive' and credence_subscription_ok(organization_id)`.execute(trx);
  for (const r of reopened) {
    if ((await resumeCampaignsForSubscription(trx, r.organization_id, 'sweep')).length > 0) {
      await messaging.scheduleDispatch(trx, r.organization_id, { includeBlocked: true });
    }
  }
  // Likewise a pause for credits that committed after the purchase's own
  // resume ran: resumed once the credits cover its cheapest blocked message.
  const { rows: funded } = await sql<{ organization_id: string }>`select distinct c.organization_id from campaigns c
    join credit_accounts a on a.organization_id = c.organization_id
    where c.status = 'paused' and c.pause_reason = 'insufficient_credits' and c.auto_resume
      and a.allowance_available + a.purchased_available >= (select min(m.cost) from messages m
        where m.campaign_id = c.id and m.status = 'blocked' and m.status_reason = 'insufficient_credits')`.execute(trx);
  for (const r of funded) {
    if ((await resumeCampaignsForCredits(trx, r.organization_id, 'sweep')).length > 0) {
      await messaging.scheduleDispatch(trx, r.organization_id, { includeBlocked: true });
    }
  }
}
