import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Carrier, SendOutcome } from '../carriers/carrier.ts';
import * as credits from '../credits/index.ts';
import { codeOf, type Db, rolledBackWhole } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';
import type { Logger } from '../shared/logger.ts';
import { type BreakerState, breakerAllows, breakerRecord, CLOSED } from './breaker.ts';
import { classifyCarrierError } from './carrierErrors.ts';
import { CAMPAIGN_CLAIMABLE, CAMPAIGN_ENDED, requestCampaignChecks } from './campaignGate.ts';
import { claim, type Claimed } from './claim.ts';
import { CONSENT_ALLOWS, SEND_BATCH, SUBSCRIPTION_OK } from './dispatch.ts';
import { nextInSenderQueue, rescheduleSenderQueue, type SenderKey } from './senderQueue.ts';
import { applyOptOut } from './optOut.ts';
import * as store from './messages.store.ts';
import { groupBy, releaseFor } from './reservations.ts';
import { type Capturer, queueCaptures } from './captures.ts';
import { multiplierFor } from './pricing.ts';
import { retryDecision } from './retry.ts';
import { organizationPriceList } from './intake.ts';

/** What the send step needs from the process (wired once in main.ts). */
export interface SendDeps {
  db: Db;
  carrier: Carrier;
  /** Public base URL of our API: status callbacks come back to it. */
  publicUrl: string;
  log: Logger;
  /** Circuit breakers, one per carrier account, kept for the process's life. */
  breakers: Map<string, BreakerState>;
  random?: () => number;
  leaseMs?: number;
  /** How far ahead a batch may take a sender's send slots. */
  slotHorizonMs?: number;
  /** Retry delay after `attempts` failed attempts; default 30 s·2ⁿ ± 20 % (tests shorten it). */
  retryDelayMs?: (attempts: number, random: number) => number;
  /** How long after a claim a carrier look-up that finds nothing proves it never arrived. */
  lookupGraceMs?: number;
  /** The carrier adapter's request timeout: with lookupGraceMs, it bounds when a claimed message may still be called (callWindowMs). */
  carrierTimeoutMs?: number;
  /** How long an unknown outcome waits for evidence before it is failed and captured (default 24 h). */
  horizonMs?: number;
  /** This process's capture drain, woken after an outcome step queued captures (without one, another process's poll drains them). */
  captures?: Pick<Capturer, 'wake'>;
}

export { DEFAULT_LEASE_MS } from './claim.ts';

/**
 * How long after its claim began a message may still be handed to the
 * carrier. Reconciliation takes a look-up that finds nothing, made
 * `lookupGraceMs` after the claim, as proof the message never arrived, and
 * sends it again: a live worker's call must have ended by then, so it must
 * have begun a carrier timeout (and half a second) earlier. A worker slowed past
 * this window (its pre-send check waiting for a connection, its process
 * starved of CPU) does not call: the message is claimed anew. Before, a
 * check that passed just before the grace ran out let the call reach the
 * carrier after reconciliation had found nothing, and the message went out
 * twice.
 */
export function callWindowMs(deps: Pick<SendDeps, 'lookupGraceMs' | 'carrierTimeoutMs'>): number {
  return (deps.lookupGraceMs ?? LOOKUP_GRACE_MS) - (deps.carrierTimeoutMs ?? DEFAULT_CARRIER_TIMEOUT_MS) - CALL_MARGIN_MS;
}
const CALL_MARGIN_MS = 500;
/** How far ahead a claim takes its sender's slots (and decides the send rules for). */
export const slotHorizonMs = (deps: Pick<SendDeps, 'slotHorizonMs'>): number => deps.slotHorizonMs ?? 2_000;
/** A look-up this long after the claim that finds nothing proves the carrier never took it (LOOKUP_GRACE_MS's floor). */
export const LOOKUP_GRACE_MS = 60_000;
/** CARRIER_TIMEOUT_MS's default. */
const DEFAULT_CARRIER_TIMEOUT_MS = 10_000;

export function statusCallbackUrl(publicUrl: string, messageId: string): string {
  return `${publicUrl}/webhooks/twilio/status?message_id=${encodeURIComponent(messageId)}`;
}

interface Attempt {
  message: store.MessageRow;
  outcome:
    | SendOutcome
    | { outcome: 'circuit_open'; retryAt: number }
    | { outcome: 'withdrawn'; reason: string; terminal: boolean }
    /** not called, and back to queued at once: the claim decides again (its attempt given back) */
    | { outcome: 'decide_again'; reason: string };
}

/**
 * A claimed message that waited for its sender's rate slot is looked at once
 * more right before the carrier call: a STOP, a pause, a freeze, a closed
 * subscription, a credit rollback that left debt or a country taken off the
 * allow-list that committed while it waited still stops it (G5, G6).
 */
async function stillMayGo(deps: SendDeps, m: store.MessageRow): Promise<{ ok: true } | { ok: false; reason: string; terminal: boolean }> {
  const { rows } = await sql<{
    consent: boolean;
    campaign: boolean;
    ended: boolean;
    frozen: boolean;
    subscription: boolean;
    enabled: boolean;
    debt: boolean;
    country: boolean;
  }>`
    select ${CONSENT_ALLOWS} as consent,
      ${CAMPAIGN_CLAIMABLE} as campaign, ${CAMPAIGN_ENDED} as ended,
      o.frozen_at is not null as frozen, ${SUBSCRIPTION_OK} as subscription, w.sms_enabled as enabled,
      exists (select 1 from credit_accounts a where a.organization_id = m.organization_id and a.debt > 0) as debt,
      m.country = any(coalesce(w.allowed_countries, array[w.home_country])) as country
    from messages m join organizations o on o.id = m.organization_id join workspaces w on w.id = m.workspace_id
    where m.id = ${m.id} and m.status = 'sending' and m.attempts = ${m.attempts}`.execute(deps.db);
  const r = rows[0];
  // No longer this claim's (it waited past its lease, and reconciliation put it back for another
  // worker): not sent from here. Its outcome is a no-op, guarded by the attempt it was claimed on.
  if (r === undefined) return { ok: false, reason: 'no_longer_claimed', terminal: true };
  if (!r.consent) return { ok: false, reason: 'no_consent', terminal: true };
  if (r.ended) return { ok: false, reason: 'campaign_cancelled', terminal: true };
  if (!r.campaign) return { ok: false, reason: 'campaign_paused', terminal: false };
  if (r.frozen) return { ok: false, reason: 'organization_frozen', terminal: false };
  if (!r.subscription) return { ok: false, reason: 'subscription_inactive', terminal: false };
  if (!r.enabled) return { ok: false, reason: 'workspace_disabled', terminal: false };
  if (r.debt) return { ok: false, reason: 'debt_outstanding', terminal: false };
  if (!r.country) return { ok: false, reason: 'country_not_allowed', terminal: true };
  return { ok: true };
}

/**
 * The send step for one batch of message ids: claim, call the carrier for
 * each claimed message outside any transaction, record every outcome in one
 * transaction. Safe to run twice: only `queued` messages are claimed, and
 * outcomes apply only to messages still `sending`.
 */
export async function sendBatch(
  deps: SendDeps,
  messageIds: readonly string[],
  options: { afterClaim?: () => Promise<void> } = {},
): Promise<{ attempted: number }> {
  const claimed = await claim(deps, messageIds);
  await options.afterClaim?.();
  if (claimed.length === 0) return { attempted: 0 };
  const attempts = await Promise.all(claimed.map((c) => attemptOne(deps, c)));
  await recordRetrying(deps, attempts);
  return { attempted: attempts.length };
}

/**
 * One turn of a sender's queue (senderQueue.ts): the next messages its
 * slots can carry, through the ordinary claim. The next turn is asked for
 * as soon as the claim has committed (at the sender's next free slot), not
 * after this turn's carrier calls: with a slow carrier the sender would sit
 * idle between turns (a one-a-second sender whose carrier took 5 s to
 * answer sent 15 messages in 26 s).
 */
export async function drainSenderQueue(deps: SendDeps, sender: SenderKey): Promise<{ attempted: number }> {
  const horizonMs = slotHorizonMs(deps);
  const ids = await nextInSenderQueue(deps.db, sender, horizonMs, SEND_BATCH);
  const next = (notBefore: Date) => rescheduleSenderQueue(deps.db, sender, horizonMs, notBefore).then(() => undefined);
  if (ids.length === 0) {
    await next(new Date(Date.now() + IDLE_TURN_MS));
    return { attempted: 0 };
  }
  // a failed wake-up does not fail the claimed batch (its messages would wait, `sending`, for their
  // lease): the sweep wakes a queue whose messages wait too long
  const wake = () => next(new Date()).catch((err: unknown) => deps.log.warn({ ...sender, err: (err as Error).message }, 'sender queue: next turn not scheduled'));
  return sendBatch(deps, ids, { afterClaim: wake });
}

/** A turn of a sender's queue that found nothing it could take comes back no sooner than this. */
const IDLE_TURN_MS = 1_000;

const RECORD_TRIES = 3;

/**
 * The outcomes are known only to this process: a deadlock or serialization
 * failure in their transaction (it rolled back whole) is retried at once
 * rather than leaving the batch `sending` for the lease and reconciliation.
 */
async function recordRetrying(deps: SendDeps, attempts: readonly Attempt[]): Promise<void> {
  for (let tries = 1; ; tries++) {
    try {
      await record(deps, attempts);
      return;
    } catch (err) {
      if (!rolledBackWhole(err) || tries >= RECORD_TRIES) throw err;
      deps.log.warn({ code: codeOf(err), tries, messages: attempts.length }, 'outcome step rolled back; recording again');
    }
  }
}

async function attemptOne(deps: SendDeps, c: Claimed): Promise<Attempt> {
  const wait = c.notBefore - Date.now();
  if (wait > 0) {
    await sleep(wait);
    let check: Awaited<ReturnType<typeof stillMayGo>>;
    try {
      check = await stillMayGo(deps, c.message);
    } catch (err) {
      // Not sent, and known not to be: a transient failure like any other (back
      // to queued with backoff), not a lost batch left `sending` until its lease.
      deps.log.warn({ message_id: c.message.id, err: (err as Error).message }, 'pre-send check failed; not sent');
      return { message: c.message, outcome: { outcome: 'not_sent', reason: `pre-send check failed: ${(err as Error).message}` } };
    }
    if (!check.ok) return { message: c.message, outcome: { outcome: 'withdrawn', reason: check.reason, terminal: check.terminal } };
  }
  // The claim's decision looked at the recipient's window up to its slot horizon. A call
  // later than that (the claim's commit waited for a lock) looks again: a window that has
  // closed since sends it back to be claimed, and deferred, anew (G5).
  if (Date.now() > c.decidedUntil && !c.mayGoAt(new Date())) {
    return { message: c.message, outcome: { outcome: 'decide_again', reason: 'decision_expired' } };
  }
  // Too late to call: reconciliation may already take the carrier's silence as proof (callWindowMs).
  if (Date.now() > c.callBy) return { message: c.message, outcome: { outcome: 'decide_again', reason: 'call_window_passed' } };
  const account = deps.carrier.accountId;
  const gate = breakerAllows(deps.breakers.get(account) ?? CLOSED, Date.now());
  deps.breakers.set(account, gate.next);
  if (!gate.allow) return { message: c.message, outcome: { outcome: 'circuit_open', retryAt: gate.retryAt ?? Date.now() + 5_000 } };
  const m = c.message;
  let outcome: SendOutcome;
  try {
    outcome = await deps.carrier.send({
      messageId: m.id,
      to: m.to_number,
      from: m.from_number,
      body: m.body,
      statusCallbackUrl: statusCallbackUrl(deps.publicUrl, m.id),
    });
  } catch (err) {
    // The adapter threw instead of answering (an error it does not know): the request may have
    // left, so the outcome is unknown (reconciliation settles it), the breaker counts a failure
    // (a probe that throws must not leave it half-open for good), and the batch's other
    // messages are recorded as usual.
    deps.log.error({ message_id: m.id, err }, 'carrier call threw; outcome unknown');
    outcome = { outcome: 'unknown', reason: `carrier call threw: ${(err as Error).message}` };
  }
  const transient =
    outcome.outcome === 'not_sent' ||
    outcome.outcome === 'unknown' ||
    (outcome.outcome === 'rejected' && classifyCarrierError(outcome.errorCode, outcome.httpStatus).class === 'transient');
  deps.breakers.set(account, breakerRecord(deps.breakers.get(account) ?? CLOSED, transient ? 'transient_failure' : 'success', Date.now()));
  deps.log.debug({ message_id: m.id, organization_id: m.organization_id, outcome: outcome.outcome }, 'carrier call');
  return { message: m, outcome };
}

async function record(deps: SendDeps, attempts: readonly Attempt[]): Promise<void> {
  const random = deps.random ?? Math.random;
  const accepted: { id: string; patch: store.Patch }[] = [];
  const failed: { id: string; patch: store.Patch }[] = [];
  const retry: { id: string; patch: store.Patch; at: number }[] = [];
  const unknown: { id: string; patch: store.Patch }[] = [];
  const withdrawnBlock: { id: string; patch: store.Patch }[] = [];
  const withdrawnSkip: { id: string; patch: store.Patch }[] = [];
  const extraSegments: { m: store.MessageRow; carrierSegments: number }[] = [];
  const optOuts: store.MessageRow[] = [];

  for (const { message: m, outcome: o } of attempts) {
    switch (o.outcome) {
      case 'accepted':
        accepted.push({
          id: m.id,
          patch: {
            provider_sid: o.providerSid,
            provider_status: o.providerStatus,
            lease_until: null,
            reason: null,
            expect_attempts: m.attempts,
            details: { attempt: m.attempts, segments: o.segments },
          },
        });
        if (o.segments !== null && o.segments > m.segments) extraSegments.push({ m, carrierSegments: o.segments });
        break;
      case 'rejected': {
        const rule = classifyCarrierError(o.errorCode, o.httpStatus);
        const details = { attempt: m.attempts, error_code: o.errorCode, http_status: o.httpStatus, message: o.message };
        if (rule.optOut) optOuts.push(m);
        if (rule.class === 'permanent') {
          failed.push({ id: m.id, patch: { reason: 'carrier_error', error_code: o.errorCode, lease_until: null, expect_attempts: m.attempts, details } });
        } else {
          planRetry(m, random, details, retry, failed, o.errorCode, deps.retryDelayMs);
        }
        break;
      }
      case 'not_sent':
        planRetry(m, random, { attempt: m.attempts, reason: o.reason }, retry, failed, null, deps.retryDelayMs);
        break;
      case 'withdrawn':
        (o.terminal ? withdrawnSkip : withdrawnBlock).push({
          id: m.id,
          patch: {
            reason: o.reason,
            lease_until: null,
            reservation_id: null,
            expect_attempts: m.attempts,
            uncount_attempt: true,
            details: { attempt: m.attempts, withdrawn: true },
          },
        });
        break;
      case 'circuit_open':
      case 'decide_again': {
        // Not attempted: try again when the breaker lets a probe through (or at once, for the
        // claim to decide again). The attempt is given back: counted, an outage of a minute or
        // so used up a message's five tries without one carrier call.
        const at = o.outcome === 'circuit_open' ? o.retryAt : Date.now();
        retry.push({
          id: m.id,
          at,
          patch: {
            reason: o.outcome === 'circuit_open' ? 'circuit_open' : o.reason,
            next_attempt_at: new Date(at).toISOString(),
            lease_until: null,
            expect_attempts: m.attempts,
            uncount_attempt: true,
          },
        });
        break;
      }
      case 'unknown':
        unknown.push({ id: m.id, patch: { reason: 'no_answer', expect_attempts: m.attempts, details: { attempt: m.attempts, reason: o.reason } } });
        break;
      default: {
        const never: never = o;
        throw new Error(`unhandled outcome ${String(never)}`);
      }
    }
  }

  const queued = await deps.db.transaction().execute(async (trx) => {
    // Lock order: message rows first (this batch, then opted-out numbers'
    // waiting messages), every ledger call (the account row) last.
    const byId = new Map(attempts.map((a) => [a.message.id, a.message]));
    const movedAccepted = new Set((await store.applyEvent(trx, 'accepted', accepted)).map((x) => x.id));
    const movedFailed = await store.applyEvent(trx, 'rejected', failed);
    const movedRetry = new Set((await store.applyEvent(trx, 'retry', retry)).map((x) => x.id));
    // one job per second of retry time, not one per message
    for (const [at, group] of groupBy(retry.filter((r) => movedRetry.has(r.id)), (r) => String(Math.ceil(r.at / 1000) * 1000))) {
      await addJob(trx, 'send', { messageIds: group.map((r) => r.id) }, { runAt: new Date(Number(at)), maxAttempts: 10 });
    }
    await store.applyEvent(trx, 'no_answer', unknown);
    const blockedNow = await store.applyEvent(trx, 'withdrawn_block', withdrawnBlock);
    const withdrawn = [...blockedNow, ...(await store.applyEvent(trx, 'withdrawn_skip', withdrawnSkip))];
    // The gate may reopen before this commits (its wake-up would miss them): look again shortly.
    for (const org of new Set(blockedNow.map((x) => x.organization_id))) {
      await addJob(
        trx,
        'dispatch',
        { organizationId: org, includeBlocked: true },
        { jobKey: `dispatch:${org}:withdrawn`, jobKeyMode: 'preserve_run_at', runAt: new Date(Date.now() + 3_000), maxAttempts: 25 },
      );
    }
    // 21610: the person has opted out at the carrier.
    const toRelease: Pick<store.MessageRow, 'organization_id' | 'reservation_id'>[] = [...movedFailed, ...withdrawn].map((x) => byId.get(x.id)!);
    for (const m of optOuts) {
      const { waiting } = await applyOptOut(trx, {
        organizationId: m.organization_id,
        workspaceId: m.workspace_id,
        phone: m.to_number,
        source: 'carrier_opt_out',
        evidence: { message_id: m.id, error_code: 21610 },
        actor: 'carrier',
        deferRelease: true,
      });
      toRelease.push(...waiting);
    }
    // Every message of the batch the carrier has: accepted just now, or
    // already moved on by a status callback (callbacks leave capture to this
    // step, even when our own call timed out).
    // Their reservation still open: looked up by its key, one per message, in a
    // sub-select the planner cannot turn into a join. As a join, a plan made while
    // the reservations were few read every open one through their partial index,
    // or the whole primary key, for each batch from then on.
    const { rows: carried } = await sql<store.MessageRow>`select m.* from messages m
      where m.id = any(${attempts.map((a) => a.message.id)}::text[]) and m.status in ('sent', 'delivered', 'undelivered')
        and (select r.state from credit_reservations r where r.id = m.reservation_id) = 'open'`.execute(trx);
    const carriedIds = new Set(carried.map((m) => m.id));
    for (const { m, carrierSegments } of extraSegments.filter((e) => movedAccepted.has(e.m.id) || carriedIds.has(e.m.id))) {
      // The carrier counted more segments than we priced: charge the difference
      // as an adjustment (it goes to debt rather than below zero).
      const priceList = await organizationPriceList(trx, m.organization_id);
      const extra = (carrierSegments - m.segments) * multiplierFor(m.country, priceList);
      await credits.adjust(trx, {
        organizationId: m.organization_id,
        amount: -extra,
        reason: `carrier billed ${carrierSegments} segments, priced ${m.segments}`,
        idempotencyKey: `segments:${m.id}`,
        actor: { type: 'system', id: 'send' },
        messageId: m.id,
      });
    }
    await releaseFor(trx, toRelease, 'carrier rejected, or the recipient opted out');
    // the captures are owed from this commit on, and applied in batches by the drain
    await queueCaptures(trx, carried);
    if (optOuts.length > 0) {
      deps.log.info({ message_ids: optOuts.map((m) => m.id) }, 'carrier reports recipients opted out (21610): consent revoked');
    }
    return carried.length;
  });
  if (queued > 0) deps.captures?.wake();
  // campaigns of this batch: completion and error threshold are looked at soon
  const campaignIds = attempts.flatMap((a) => a.message.campaign_id ?? []);
  if (campaignIds.length > 0) {
    await requestCampaignChecks(deps.db, campaignIds).catch((err: unknown) =>
      deps.log.warn({ err: (err as Error).message }, 'could not schedule a campaign check; the minute sweep will look'),
    );
  }
}

function planRetry(
  m: store.MessageRow,
  random: () => number,
  details: Record<string, unknown>,
  retry: { id: string; patch: store.Patch; at: number }[],
  failed: { id: string; patch: store.Patch }[],
  errorCode: number | null,
  delay?: (attempts: number, random: number) => number,
): void {
  const r = random();
  const decision = retryDecision(m.attempts, r);
  if (!decision.retry) {
    failed.push({ id: m.id, patch: { reason: 'attempts_exhausted', error_code: errorCode, lease_until: null, expect_attempts: m.attempts, details } });
    return;
  }
  const at = Date.now() + (delay ? delay(m.attempts, r) : decision.delayMs);
  retry.push({
    id: m.id,
    at,
    patch: { reason: 'transient_error', error_code: errorCode, next_attempt_at: new Date(at).toISOString(), lease_until: null, expect_attempts: m.attempts, details },
  });
}
