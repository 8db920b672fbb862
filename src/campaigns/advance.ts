import { sql } from 'kysely';
import type { Db, Tx } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';
import * as messaging from '../messaging/index.ts';
import { allowedCountries } from '../sendrules/index.ts';
import { orderedId } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import { type CampaignRow, findCampaign } from './campaigns.store.ts';
import { judgeRecipient } from './recipient.ts';
import { parseTemplate, render } from './template.ts';

/** How soon a step that found the campaign's messages blocked for credits looks again. */
const BLOCKED_RECHECK_MS = 1_000;

/** Recipients turned into messages per advance step (without a throttle). */
export const ADVANCE_BATCH = 1_000;

interface RecipientRow {
  seq: number;
  phone: string;
  timezone: string | null;
  variables: Record<string, unknown>;
}

/**
 * One pending advance per campaign, under its job key: a resume (or the
 * sweep's restart of a stalled campaign) moves the pending step instead of
 * starting a second chain beside it, which doubled a throttled campaign's
 * rate for good after a quick pause and resume.
 */
export async function scheduleAdvance(trx: Tx, campaignId: string, runAt?: Date): Promise<void> {
  await addJob(trx, 'campaign_advance', { campaignId }, { maxAttempts: 25, jobKey: `campaign_advance:${campaignId}`, jobKeyMode: 'replace', ...(runAt && { runAt }) });
}

/**
 * A throttled step's size and the time to the next one: the whole number of
 * messages in a second, every batch/mps seconds (2.5 a second: 2 every
 * 800 ms; it was 2 a second), or one message every 1/mps s below 1.
 */
export function throttleStep(mps: number): { batch: number; everyMs: number } {
  if (mps < 1) return { batch: 1, everyMs: Math.ceil(1_000 / mps) };
  const batch = Math.floor(mps);
  return { batch, everyMs: Math.round((1_000 * batch) / mps) };
}

export async function scheduleCheck(trx: Tx, campaignId: string, delayMs = 2_000): Promise<void> {
  await messaging.scheduleCampaignCheck(trx, [campaignId], delayMs);
}

/**
 * One advance step: under the campaign row's lock, turn the next recipients
 * into messages (`dedupe_key = campaign:{id}:{seq}`, ids in seq order) and
 * move the cursor, in one transaction. Only a running campaign advances; a
 * rerun after a crash continues from the cursor, and the dedupe key makes a
 * second copy impossible anyway. Numbers that may never be texted are
 * created `skipped` with the reason, so every recipient has its message.
 */
export async function advanceCampaign(deps: { db: Db; log: Logger }, campaignId: string): Promise<{ created: number; done: boolean }> {
  let orgToWake: string | undefined;
  const result = await deps.db.transaction().execute(async (trx) => {
    const c = await findCampaign(trx, campaignId, { lock: true });
    if (c === undefined || c.status !== 'running' || c.audience_size === null) return { created: 0, done: true };
    // Too early for a throttled step (a resume, or the sweep's restart, asks for one at once): the
    // step waits for its time, so neither makes the campaign go faster than its throttle.
    // On the database's clock, as the job's run_at (a worker's clock behind it looped here), and
    // its time now: now() is the transaction's start, before any wait for the campaign row.
    if (c.next_advance_at !== null) {
      const { rows } = await sql<{ early: boolean }>`select ${c.next_advance_at}::timestamptz > clock_timestamp() + interval '50 milliseconds' as early`.execute(trx);
      if (rows[0]?.early === true) {
        await scheduleAdvance(trx, c.id, c.next_advance_at);
        return { created: 0, done: false };
      }
    }
    // Messages of this campaign still blocked for credits go first: credits that arrive pay for
    // them before any message created after the resume (the paid-for prefix; a step created
    // the next recipients, an ordinary dispatch run paid for those, and the older ones stayed
    // blocked). The step waits for the blocked ones' dispatch, which it asks for itself.
    const { rows: blocked } = await sql<{ any: boolean }>`select exists (select 1 from messages where campaign_id = ${c.id}
      and status = 'blocked' and status_reason in ('insufficient_credits', 'debt_outstanding')) as any`.execute(trx);
    if (blocked[0]?.any === true) {
      await messaging.scheduleDispatch(trx, c.organization_id, { includeBlocked: true });
      await scheduleAdvance(trx, c.id, new Date(Date.now() + BLOCKED_RECHECK_MS));
      return { created: 0, done: false };
    }
    const perSecond = c.throttle_mps;
    const step = perSecond === null ? undefined : throttleStep(perSecond);
    const batch = step === undefined ? ADVANCE_BATCH : step.batch;
    const { rows: recipients } = await sql<RecipientRow>`select seq, phone, timezone, variables from campaign_recipients
      where campaign_id = ${c.id} and seq > ${c.cursor} order by seq limit ${batch}`.execute(trx);
    if (recipients.length === 0) {
      await scheduleCheck(trx, c.id, 0);
      return { created: 0, done: true };
    }
    const rows = await buildMessages(trx, c, recipients, perSecond);
    const planned = rows.filter((r) => r.status_reason === null);
    const skipped = rows.filter((r) => r.status_reason !== null);
    const created = [
      ...(await messaging.insertMessages(trx, planned, 'planned')),
      ...(await messaging.insertMessages(trx, skipped, 'skipped')),
    ];
    // A throttle spreads the batch over the next second: the next step's
    // wake-up dispatches what has come due by then, but nothing follows the
    // last step (or one before a pause), so the batch's own end wakes the
    // dispatcher too; otherwise its tail would wait for the minute's sweep.
    if (perSecond !== null && planned.length > 0) {
      const lastDue = Math.max(...planned.map((m) => m.send_at.getTime()));
      await messaging.scheduleDispatch(trx, c.organization_id, { runAt: new Date(lastDue + 50) });
    }
    const last = recipients.at(-1)!.seq;
    const { rows: moved } = await sql<{ next: Date | null }>`update campaigns set cursor = ${last}, updated_at = now(),
        next_advance_at = ${step === undefined ? null : step.everyMs}::int * interval '1 millisecond' + clock_timestamp()
      where id = ${c.id} returning next_advance_at as next`.execute(trx);
    const done = last >= c.audience_size;
    if (done) await scheduleCheck(trx, c.id);
    else await scheduleAdvance(trx, c.id, moved[0]?.next ?? undefined);
    orgToWake = c.organization_id;
    return { created: created.length, done };
  });
  if (orgToWake !== undefined) messaging.wakeDispatcher(deps.db, orgToWake);
  return result;
}

async function buildMessages(
  trx: Tx,
  c: CampaignRow,
  recipients: readonly RecipientRow[],
  perSecond: number | null,
): Promise<(messaging.NewMessage & { status_reason: string | null })[]> {
  const parsed = parseTemplate(c.body_template);
  if (!parsed.ok) throw new Error(`campaign ${c.id}: template no longer parses: ${parsed.reason}`);
  const allowed = allowedCountries(await messaging.workspaceCountries(trx, c.workspace_id));
  const priceList = await messaging.organizationPriceList(trx, c.organization_id);
  const now = Date.now();
  const stem = c.id.slice(-6);
  return recipients.map((r, i) => {
    const body = render(parsed, r.variables);
    // consent is decided at dispatch and claim, where the message is sent
    const verdict = judgeRecipient(r.phone, body, { allowed, priceList, consentOk: true });
    const { phone } = verdict;
    const reason = verdict.skip;
    const priced = verdict.skip === null ? verdict.priced : undefined;
    return {
      id: orderedId('msg', stem, r.seq, now),
      organization_id: c.organization_id,
      workspace_id: c.workspace_id,
      dedupe_key: `campaign:${c.id}:${r.seq}`,
      request_hash: null,
      producer: 'campaign' as const,
      campaign_id: c.id,
      purpose: c.purpose,
      to_number: priced?.to ?? r.phone,
      country: priced?.country ?? (phone.ok ? phone.country : 'ZZ'),
      from_number: c.from_number,
      body: messaging.truncateCharacters(body, messaging.MAX_BODY) || '(empty)',
      encoding: priced?.encoding ?? 'GSM-7',
      segments: priced?.segments ?? 1,
      cost: priced?.cost ?? 1,
      // a throttle spreads the batch over its second
      send_at: new Date(perSecond === null ? now : now + Math.floor((i * 1000) / perSecond)),
      recipient_timezone: r.timezone,
      status_reason: reason,
    };
  });
}
