import { sql } from 'kysely';
import type { CarrierMessage } from '../carriers/carrier.ts';
import * as credits from '../credits/index.ts';
import type { DbOrTx, Tx } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';
import { forEachLimited } from '../shared/concurrency.ts';
import { classifyCarrierError } from './carrierErrors.ts';
import { enqueueSends } from './dispatch.ts';
import * as store from './messages.store.ts';
import { applyOptOut } from './optOut.ts';
import { MAX_ATTEMPTS } from './retry.ts';
import { scheduleSenderQueue } from './senderQueue.ts';
import { captureFor, releaseFor } from './reservations.ts';
import { DEFAULT_LEASE_MS, LOOKUP_GRACE_MS, type SendDeps } from './send.ts';
import { eventForCarrierStatus, type MessageEvent, type MessageStatus, transition } from './states.ts';

/** A message left `unknown` this long without evidence is given up (charged, never resent). */
export const RECONCILIATION_HORIZON_MS = 24 * 3_600_000;
/** Carrier look-ups of one reconciliation at a time. */
const RECONCILE_LOOKUPS = 8;

export interface CarrierReport {
  providerSid: string;
  status: string;
  errorCode: number | null;
}

/**
 * Apply what the carrier says about a message (status callback or look-up).
 * Statuses only move forward; a duplicate changes nothing. A message the
 * carrier took is captured; one it reports undelivered is refunded when the
 * organization's policy says so.
 */
export async function applyCarrierReport(trx: Tx, message: store.MessageRow, report: CarrierReport, source: string): Promise<boolean> {
  const event = eventForCarrierStatus(report.status);
  if (event === undefined) return false;
  const moved = await store.applyEvent(trx, event, [
    {
      id: message.id,
      patch: {
        provider_sid: report.providerSid,
        provider_status: report.status,
        lease_until: null,
        ...(report.errorCode !== null && { error_code: report.errorCode }),
        reason: event === 'carrier_undelivered' ? `carrier_${report.status}` : null,
        details: { source, carrier_status: report.status, ...(report.errorCode !== null && { error_code: report.errorCode }) },
      },
    },
  ]);
  const step = moved[0];
  if (step === undefined) return false;
  // 21610 reported after the carrier took the message (a Messaging Service
  // sender reports it in the status callback, not in the answer to the
  // send): the person opted out at the carrier, as on the send path. Before
  // the captures below: message rows first, then the account.
  if (report.errorCode !== null && classifyCarrierError(report.errorCode, 200).optOut === true) {
    await applyOptOut(trx, {
      organizationId: message.organization_id,
      workspaceId: message.workspace_id,
      phone: message.to_number,
      source: 'carrier_opt_out',
      evidence: { message_id: message.id, error_code: report.errorCode, via: source },
      actor: 'carrier',
    });
  }
  // Capture: a message still `sending` is captured by its worker's outcome
  // step, in a batch with the others (one account lock per batch, not per
  // callback); if that worker died, reconciliation captures it. A message
  // the worker left `unknown` has nobody else to capture it, and an
  // undelivered one must be captured before its refund.
  // Undelivered is always captured first (its refund needs a captured
  // reservation; capturing one already captured is refused, harmlessly).
  if (step.from_status === 'unknown' || event === 'carrier_undelivered') {
    await captureFor(trx, [message], `carrier reported ${report.status}`);
  }
  if (event === 'carrier_undelivered' && message.reservation_id !== null) {
    const { rows } = await sql<{ refund: boolean }>`select refund_undelivered as refund from organizations where id = ${message.organization_id}`.execute(trx);
    if (rows[0]?.refund) {
      await credits.refund(trx, {
        organizationId: message.organization_id,
        reservationIds: [message.reservation_id],
        idempotencyKey: `refund:${message.id}`,
        actor: { type: 'system', id: 'status' },
        reason: `carrier reported ${report.status}${report.errorCode ? ` (${report.errorCode})` : ''}`,
      });
    }
  }
  return true;
}

export type CallbackResult = 'applied' | 'duplicate_or_stale' | 'unknown_message' | 'mismatched_sid' | 'unknown_status';

/** A status callback's fields, read once. */
export interface StatusReport {
  messageId: string;
  sid: string;
  status: string;
  event: MessageEvent;
  errorCode: number | null;
}

export function readStatusCallback(messageId: string, params: Record<string, string>): StatusReport | undefined {
  const status = params.MessageStatus ?? params.SmsStatus;
  const sid = params.MessageSid ?? params.SmsSid;
  if (status === undefined || sid === undefined) return undefined;
  const event = eventForCarrierStatus(status);
  if (event === undefined) return undefined;
  const parsedCode = params.ErrorCode ? Number(params.ErrorCode) : null;
  const errorCode = parsedCode !== null && Number.isFinite(parsedCode) ? parsedCode : null;
  return { messageId, sid, status, event, errorCode };
}

/**
 * The common forward step, one statement with no ledger work: `sent` or
 * `delivered` for a message the worker is still sending or has recorded as
 * sent. Anything else (a refund, a capture after `unknown`) takes the
 * locked path.
 */
export const isFastReport = (r: StatusReport): boolean => r.event === 'carrier_sent' || r.event === 'carrier_delivered';
export const FAST_FROM: readonly MessageStatus[] = ['sending', 'sent'];
export function fastPatch(r: StatusReport): store.Patch {
  return {
    provider_sid: r.sid,
    provider_status: r.status,
    lease_until: null,
    reason: null,
    expect_sid: r.sid,
    details: { source: 'status_callback', carrier_status: r.status },
  };
}

/** POST /webhooks/twilio/status, after the signature was verified. */
export async function handleStatusCallback(
  deps: Pick<SendDeps, 'db' | 'log'>,
  messageId: string,
  params: Record<string, string>,
): Promise<CallbackResult> {
  const report = readStatusCallback(messageId, params);
  if (report === undefined) return 'unknown_status';
  if (isFastReport(report)) {
    const moved = await store.applyEvent(deps.db, report.event, [{ id: messageId, patch: fastPatch(report) }], { onlyFrom: FAST_FROM });
    if (moved.length > 0) return 'applied';
  }
  // Duplicates and stale statuses are recognised without a lock or a transaction.
  const { rows: peek } = await sql<{ status: store.MessageRow['status']; provider_sid: string | null }>`
    select status, provider_sid from messages where id = ${messageId}`.execute(deps.db);
  return settleStatusReport(deps, report, peek[0]);
}

/**
 * What the fast path did not move, given the message's status and carrier
 * id as just read: a duplicate, a stale status, another carrier message, or
 * a step that needs the message locked and the ledger.
 */
export async function settleStatusReport(
  deps: Pick<SendDeps, 'db' | 'log'>,
  report: StatusReport,
  current: { status: store.MessageRow['status']; provider_sid: string | null } | undefined,
): Promise<CallbackResult> {
  const { messageId, sid } = report;
  if (current === undefined) return 'unknown_message';
  if (current.provider_sid !== null && current.provider_sid !== sid) {
    deps.log.warn({ message_id: messageId, sid, known: current.provider_sid }, 'status callback for another carrier message');
    return 'mismatched_sid';
  }
  if (!transition(current.status, report.event).ok) return 'duplicate_or_stale';

  return deps.db.transaction().execute(async (trx) => {
    const { rows } = await sql<store.MessageRow>`select * from messages where id = ${messageId} for update`.execute(trx);
    const message = rows[0];
    if (message === undefined) return 'unknown_message';
    if (message.provider_sid !== null && message.provider_sid !== sid) return 'mismatched_sid';
    const applied = await applyCarrierReport(trx, message, { providerSid: sid, status: report.status, errorCode: report.errorCode }, 'status_callback');
    return applied ? 'applied' : 'duplicate_or_stale';
  });
}

export interface ReconcileReport {
  checked: number;
  settled: number;
  requeued: number;
  givenUp: number;
}

/**
 * Settle messages whose outcome we do not know: `unknown`, or `sending` past
 * its lease (a worker died mid-send). The carrier is asked (by its id, or by
 * destination and body when the id was never recorded); what it says is
 * applied. Nothing found long enough after the claim: it never got there, so
 * it is queued again. No evidence for 24 hours: failed, credits captured.
 */
export async function reconcile(deps: SendDeps, limit = 200): Promise<ReconcileReport> {
  const report: ReconcileReport = { checked: 0, settled: 0, requeued: 0, givenUp: 0 };
  // The carrier took these (a callback said so) but the worker that claimed
  // them died before its outcome step captured them: capture now (G3).
  await deps.db.transaction().execute(async (trx) => {
    // From the open reservations (their partial index) to their messages by key:
    // joined the other way, through `reservation_id`, which no index serves, every
    // run read the whole of `messages`.
    const { rows: uncaptured } = await sql<store.MessageRow>`select m.* from credit_reservations r
      join messages m on m.id = r.message_id and m.reservation_id = r.id
      where r.state = 'open' and m.status in ('sent', 'delivered', 'undelivered')
        and m.updated_at < now() - ${`${deps.leaseMs ?? DEFAULT_LEASE_MS} milliseconds`}::interval
      limit 5000`.execute(trx);
    await captureFor(trx, uncaptured, 'carrier accepted (captured by reconciliation)');
  });
  const lease = `${deps.leaseMs ?? DEFAULT_LEASE_MS} milliseconds`;
  const horizon = `${deps.horizonMs ?? RECONCILIATION_HORIZON_MS} milliseconds`;
  const { rows } = await sql<store.MessageRow>`select * from messages
    where (status = 'sending' and lease_until < now())
       or (status = 'unknown' and updated_at < now() - interval '30 seconds')
       -- accepted, but its final status never came (a lost callback): asked at
       -- ages of about one lease, two, four, … until the horizon
       or (status = 'sent' and sent_at > now() - ${horizon}::interval
           and updated_at < now() - greatest(${lease}::interval, (now() - sent_at) / 2))
    order by updated_at limit ${limit}`.execute(deps.db);
  // Several look-ups at a time (a worker killed mid-batch leaves up to a
  // batch of messages to ask about). Messages that can only be looked up by
  // number and body are taken one after another within their group, so that
  // one carrier message is never matched to two of ours.
  const groups = new Map<string, store.MessageRow[]>();
  for (const m of rows) {
    const key = m.status !== 'sent' && m.provider_sid === null ? `${m.to_number}\u0000${m.body}` : m.id;
    const group = groups.get(key);
    if (group === undefined) groups.set(key, [m]);
    else group.push(m);
  }
  await forEachLimited([...groups.values()], RECONCILE_LOOKUPS, async (group) => {
    for (const m of group) await reconcileOne(deps, m, report);
  });
  return report;
}

/** One message of a reconciliation: ask the carrier, then apply what it said (or what its silence proves). */
async function reconcileOne(deps: SendDeps, m: store.MessageRow, report: ReconcileReport): Promise<void> {
  report.checked++;
  if (m.status === 'sent') {
    if (await settleSent(deps, m)) report.settled++;
    return;
  }
  // The look-up proves absence as of when it was asked, not when its answer
  // came back: a live worker's call may reach the carrier in between.
  const age = Date.now() - (m.claimed_at ?? m.created_at).getTime();
  let found: CarrierMessage | undefined;
  let lookedUp = false;
  /** The carrier holds copies that may be this message's or a sibling's: neither proof of absence nor a match. */
  let ambiguous = false;
  try {
    if (m.provider_sid !== null) {
      found = await deps.carrier.fetchMessage(m.provider_sid);
    } else {
      const since = new Date((m.claimed_at ?? m.created_at).getTime() - 60_000);
      const candidates = await deps.carrier.findMessages({ to: m.to_number, from: m.from_number, since });
      const matching = candidates.filter((c) => c.body === m.body);
      if (matching.length > 0) {
        const { rows: taken } = await sql<{ provider_sid: string }>`select provider_sid from messages
          where provider_sid = any(${matching.map((c) => c.providerSid)}::text[])`.execute(deps.db);
        const takenSet = new Set(taken.map((t) => t.provider_sid));
        const untaken = matching.filter((c) => !takenSet.has(c.providerSid)).sort((a, b) => a.dateCreated.getTime() - b.dateCreated.getTime());
        const match = untaken.length === 0 ? { take: false, ambiguous: false } : matchBySiblings(untaken.length, await unresolvedSiblings(deps.db, m));
        if (match.take) found = untaken[0];
        ambiguous = match.ambiguous;
      }
    }
    lookedUp = true;
  } catch (err) {
    deps.log.warn({ message_id: m.id, err: (err as Error).message }, 'carrier look-up failed');
  }
  await deps.db.transaction().execute(async (trx) => {
    if (found !== undefined) {
      if (await applyCarrierReport(trx, m, { providerSid: found.providerSid, status: found.status, errorCode: found.errorCode }, 'reconciliation')) report.settled++;
      return;
    }
    if (lookedUp && !ambiguous && age >= (deps.lookupGraceMs ?? LOOKUP_GRACE_MS)) {
      if (m.attempts >= MAX_ATTEMPTS) {
        const moved = await store.applyEvent(trx, 'rejected', [
          { id: m.id, patch: { reason: 'attempts_exhausted', lease_until: null, expect_attempts: m.attempts, details: { source: 'reconciliation' } } },
        ]);
        await releaseFor(trx, moved.length ? [m] : [], 'not at the carrier, attempts exhausted');
        return;
      }
      const moved = await store.applyEvent(trx, 'not_at_carrier', [
        // only the attempt we looked up: a newer attempt may be at the carrier by now
        { id: m.id, patch: { reason: 'not_at_carrier', lease_until: null, next_attempt_at: null, expect_attempts: m.attempts, details: { source: 'reconciliation' } } },
      ]);
      if (moved.length > 0) {
        await enqueueSends(trx, [m.id]);
        report.requeued++;
      }
      return;
    }
    if (m.status === 'sending') {
      await store.applyEvent(trx, 'no_answer', [{ id: m.id, patch: { reason: 'lease_expired', details: { source: 'reconciliation' } } }]);
      return;
    }
    if (ambiguous && m.status === 'unknown' && age < (deps.horizonMs ?? RECONCILIATION_HORIZON_MS)) {
      // looked at, nothing learned: to the back of the next runs' order, or a few hundred
      // ambiguous messages would take every run's places until the horizon
      await sql`update messages set updated_at = now() where id = ${m.id} and status = 'unknown'`.execute(trx);
      return;
    }
    if (m.status === 'unknown' && age >= (deps.horizonMs ?? RECONCILIATION_HORIZON_MS)) {
      const moved = await store.applyEvent(trx, 'outcome_unknown', [
        { id: m.id, patch: { reason: 'outcome_unknown', details: { source: 'reconciliation', note: 'captured: the carrier may have billed it; never resent' } } },
      ]);
      if (moved.length > 0) {
        await captureFor(trx, [m], 'outcome_unknown: no evidence within the reconciliation horizon; captured because the carrier may have billed it');
        report.givenUp++;
      }
    }
  });
}

/**
 * Our other messages, in any organization (one carrier account serves all,
 * and an alphanumeric sender id may repeat between them), that a carrier
 * message with this number, sender and body could belong to: no carrier id
 * recorded, and at the carrier or maybe on its way (`sending`, `unknown`).
 * `live`: one of them is in a worker's hands now (its answer may still come).
 */
async function unresolvedSiblings(db: DbOrTx, m: store.MessageRow): Promise<{ count: number; live: boolean }> {
  const { rows } = await sql<{ count: number; live: boolean | null }>`
    select count(*)::int as count, bool_or(status = 'sending' and lease_until >= now()) as live from messages
    where status in ('sending', 'unknown') and provider_sid is null and id <> ${m.id}
      and to_number = ${m.to_number} and from_number is not distinct from ${m.from_number} and body = ${m.body}`.execute(db);
  return { count: rows[0]?.count ?? 0, live: rows[0]?.live ?? false };
}

/**
 * Whether a message found by number and body may take the oldest untaken
 * carrier copy (pure). Alone, it may. With unresolved siblings the copies
 * cannot be told apart: it takes one only when every one of them has a copy
 * and none is still in a worker's hands (that worker records its own copy:
 * taking it would make the sibling look absent, and be sent again);
 * otherwise it waits for the status callbacks (their URLs name our message)
 * or the horizon, and is never queued again on that evidence.
 */
export function matchBySiblings(untaken: number, siblings: { count: number; live: boolean }): { take: boolean; ambiguous: boolean } {
  if (untaken === 0) return { take: false, ambiguous: false };
  if (siblings.count === 0) return { take: true, ambiguous: false };
  if (!siblings.live && untaken >= siblings.count + 1) return { take: true, ambiguous: false };
  return { take: false, ambiguous: true };
}

/**
 * A `sent` message whose final status never arrived: the carrier is asked;
 * a final status applies (an undelivered one is refunded as its callback
 * would have been); otherwise it is asked again later.
 */
async function settleSent(deps: SendDeps, m: store.MessageRow): Promise<boolean> {
  let found: CarrierMessage | undefined;
  try {
    if (m.provider_sid !== null) found = await deps.carrier.fetchMessage(m.provider_sid);
  } catch (err) {
    // A look-up that failed (a timeout, the carrier unreachable) told us
    // nothing: the message is asked about again at the next reconciliation,
    // not at twice its age. Before, it counted as asked, and a message whose
    // final callback was lost while the carrier answered slowly waited minutes
    // for its next look-up (a default chaos run ended with one still `sent`).
    deps.log.warn({ message_id: m.id, err: (err as Error).message }, 'carrier look-up failed; asked again at the next reconciliation');
    return false;
  }
  return deps.db.transaction().execute(async (trx) => {
    const event = found === undefined ? undefined : eventForCarrierStatus(found.status);
    if (found !== undefined && event !== undefined && event !== 'carrier_sent') {
      const { rows } = await sql<store.MessageRow>`select * from messages where id = ${m.id} and status = 'sent' for update`.execute(trx);
      if (rows[0] !== undefined && (await applyCarrierReport(trx, rows[0], { providerSid: found.providerSid, status: found.status, errorCode: found.errorCode }, 'reconciliation'))) return true;
    }
    await sql`update messages set updated_at = now() where id = ${m.id} and status = 'sent'`.execute(trx);
    return false;
  });
}

/** Periodic safety net: wake dispatchers with due work, and the sender queues of messages whose send job was lost. */
export async function sweep(trx: Tx, options: { staleQueuedMs?: number } = {}): Promise<{ organizations: string[]; senderQueues: number }> {
  const stale = `${options.staleQueuedMs ?? 120_000} milliseconds`;
  const { rows: orgs } = await sql<{ organization_id: string }>`select distinct organization_id from messages
    where (status = 'planned' and send_at <= now()) or (status = 'deferred' and coalesce(next_attempt_at, send_at) <= now())`.execute(trx);
  // Queued this long past its due time without a claim: its send job is
  // lost or locked by a worker that died, or it waits in its sender's queue
  // (a long backlog behind a slow sender). Either way the sender's queue
  // (senderQueue.ts) takes it, in order: a send job for each would be
  // claimed at once, and all but the sender's few slots rewritten for
  // nothing.
  const { rows: lost } = await sql<{ workspace_id: string; from_number: string }>`select distinct workspace_id, from_number from messages
    where status = 'queued' and coalesce(next_attempt_at, updated_at) < now() - ${stale}::interval limit 1000`.execute(trx);
  for (const s of lost) await scheduleSenderQueue(trx, { workspaceId: s.workspace_id, fromNumber: s.from_number }, new Date());
  // Blocked by a gate that has reopened since (a block committed after the
  // reopening's own wake-up): dispatch them again. Credits have their own
  // wake-up (a purchase or grant), so insufficient_credits is not polled.
  const { rows: reopened } = await sql<{ organization_id: string }>`select distinct m.organization_id from messages m
    join organizations o on o.id = m.organization_id join workspaces w on w.id = m.workspace_id
    where m.status = 'blocked'
      and m.status_reason in ('organization_frozen', 'subscription_inactive', 'workspace_disabled', 'campaign_paused')
      and o.frozen_at is null and w.sms_enabled and credence_subscription_ok(o.id)
      and (m.campaign_id is null or exists (select 1 from campaigns c where c.id = m.campaign_id and c.status = 'running'))
    limit 1000`.execute(trx);
  for (const r of reopened) {
    await addJob(trx, 'dispatch', { organizationId: r.organization_id, includeBlocked: true }, {
      jobKey: `dispatch:${r.organization_id}:blocked`,
      jobKeyMode: 'replace',
      maxAttempts: 25,
    });
  }
  // hourly-cap counters older than the hour they count are of no further use
  await sql`delete from send_counters where minute < now() - interval '2 hours'`.execute(trx);
  return { organizations: orgs.map((o) => o.organization_id), senderQueues: lost.length };
}
