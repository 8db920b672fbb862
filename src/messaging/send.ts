import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Carrier, SendOutcome } from '../carriers/carrier.ts';
import * as credits from '../credits/index.ts';
import type { Db, Tx } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';
import { newId } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import { type BreakerState, breakerAllows, breakerRecord, CLOSED } from './breaker.ts';
import { classifyCarrierError } from './carrierErrors.ts';
import { CAMPAIGN_CLAIMABLE, CAMPAIGN_ENDED, scheduleCampaignCheck } from './campaignGate.ts';
import { ruleColumns, scheduleDeferred } from './dispatch.ts';
import { applyLimits, countHourlySends, type LimitRow } from './limits.ts';
import { applyOptOut } from './optOut.ts';
import { decide, type RuleColumns } from './rules.ts';
import * as store from './messages.store.ts';
import { multiplierFor } from './pricing.ts';
import { retryDecision } from './retry.ts';
import { takeSendSlots } from './senders.ts';
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
}

export const DEFAULT_LEASE_MS = 120_000;

type ClaimRow = LimitRow &
  RuleColumns & {
    frozen: boolean;
    debt: number;
  };

export function statusCallbackUrl(publicUrl: string, messageId: string): string {
  return `${publicUrl}/webhooks/twilio/status?message_id=${encodeURIComponent(messageId)}`;
}

interface Claimed {
  message: store.MessageRow;
  /** When its sender's rate allows it to go (epoch ms). */
  notBefore: number;
}

/**
 * Claim: one transaction that locks the batch's queued messages, re-checks
 * every send-time rule (gates, destination country, consent, the
 * recipient's quiet hours, frequency and hourly caps), takes sender rate
 * slots, and moves the ones that may go to `sending` with one conditional
 * UPDATE that repeats the gates and the consent check in its WHERE, so a
 * STOP or a pause that commits before that statement is honoured (G5, G6).
 * Messages that may not go now give their credits back: `blocked` (gate
 * closed, resumable), `skipped` (terminal) or `deferred` (until an instant).
 */
async function claim(deps: SendDeps, ids: readonly string[]): Promise<Claimed[]> {
  const leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
  return deps.db.transaction().execute(async (trx) => {
    const { rows } = await sql<ClaimRow>`
      select m.*, ${ruleColumns('claim')}, w.frequency_caps, w.hourly_cap,
        o.frozen_at is not null as frozen, coalesce(a.debt, 0)::bigint as debt
      from messages m
      join workspaces w on w.id = m.workspace_id
      join organizations o on o.id = m.organization_id
      left join credit_accounts a on a.organization_id = m.organization_id
      where m.id = any(${[...ids]}::text[]) and m.status = 'queued'
        and coalesce(m.next_attempt_at, m.send_at) <= now()
      order by m.id
      for update of m skip locked`.execute(trx);

    const now = new Date();
    const refused: Refusals = { block: [], skip: [], defer: [] };
    const passed: ClaimRow[] = [];
    for (const m of rows) {
      const d = decide(m, { organizationFrozen: m.frozen, workspaceSmsEnabled: m.sms_enabled, debt: m.debt }, now);
      switch (d.action) {
        case 'go':
          passed.push(m);
          break;
        case 'block':
          refused.block.push({ row: m, reason: d.reason });
          break;
        case 'skip':
          refused.skip.push({ row: m, reason: d.reason });
          break;
        case 'defer':
          refused.defer.push({ row: m, reason: d.reason, until: d.until });
          break;
        default: {
          const never: never = d;
          throw new Error(`unhandled decision ${String(never)}`);
        }
      }
    }

    const limits = await applyLimits(trx, passed, now);
    for (const m of limits.capped) refused.skip.push({ row: m, reason: 'frequency_cap' });
    for (const { row, until } of limits.deferred) refused.defer.push({ row, reason: 'hourly_cap', until });
    const eligible = limits.allowed;

    // Sender rate: slots are taken under each sender row's lock, shared by
    // all workers, in a fixed order (no lock cycles between claims).
    const bySender = new Map<string, ClaimRow[]>();
    for (const m of eligible) {
      const k = `${m.workspace_id}\u0000${m.from_number}`;
      bySender.set(k, [...(bySender.get(k) ?? []), m]);
    }
    const go: Claimed[] = [];
    const later: { ids: string[]; at: number }[] = [];
    for (const key of [...bySender.keys()].sort()) {
      const group = bySender.get(key)!;
      const first = group[0]!;
      const slots = await takeSendSlots(trx, first.workspace_id, first.from_number, group.length, deps.slotHorizonMs ?? 2_000);
      group.forEach((m, i) => {
        if (i < slots.granted) go.push({ message: m, notBefore: slots.startAt + i * slots.intervalMs });
      });
      if (slots.granted < group.length) later.push({ ids: group.slice(slots.granted).map((m) => m.id), at: slots.nextFreeAt });
    }
    for (const l of later) {
      await sql`update messages set next_attempt_at = ${new Date(l.at)}, updated_at = now() where id = any(${l.ids}::text[])`.execute(trx);
      await addJob(trx, 'send', { messageIds: l.ids }, { runAt: new Date(l.at), maxAttempts: 10 });
    }

    let claimed: store.MessageRow[] = [];
    if (go.length > 0) {
      // The claim itself: one conditional UPDATE, gates and consent repeated in its WHERE.
      ({ rows: claimed } = await sql<store.MessageRow>`
        with c as (
          update messages m set status = 'sending', attempts = m.attempts + 1, claimed_at = now(),
            lease_until = now() + ${`${leaseMs} milliseconds`}::interval, next_attempt_at = null, updated_at = now()
          from organizations o, workspaces w
          where m.id = any(${go.map((g) => g.message.id)}::text[]) and m.status = 'queued'
            and o.id = m.organization_id and o.frozen_at is null
            and w.id = m.workspace_id and w.sms_enabled
            and m.country = any(coalesce(w.allowed_countries, array[w.home_country]))
            and not exists (select 1 from credit_accounts a where a.organization_id = m.organization_id and a.debt > 0)
            and credence_consent_allows(m.workspace_id, m.to_number, m.purpose, m.producer)
            and ${CAMPAIGN_CLAIMABLE}
            and credence_subscription_ok(m.organization_id)
          returning m.*
        ), ev as (
          insert into message_events (message_id, organization_id, event, from_status, to_status, details)
          select id, organization_id, 'claim', 'queued', 'sending', jsonb_build_object('attempt', attempts) from c
        )
        select * from c`.execute(trx));
      const claimedIds = new Set(claimed.map((m) => m.id));
      await countHourlySends(
        trx,
        eligible.filter((m) => claimedIds.has(m.id)),
      );
    }
    // Last, so the account lock is the final lock this transaction takes.
    await refuse(trx, refused);
    const byId = new Map(go.map((g) => [g.message.id, g.notBefore]));
    return claimed.map((m) => ({ message: m, notBefore: byId.get(m.id) ?? Date.now() }));
  });
}

interface Refusals {
  block: { row: ClaimRow; reason: string }[];
  skip: { row: ClaimRow; reason: string }[];
  defer: { row: ClaimRow; reason: string; until: Date }[];
}

/**
 * Messages that may not go now give their reservation back: `blocked` until
 * the gate opens, `skipped` for good, or `deferred` until an instant (and
 * the dispatcher is woken then to reserve again).
 */
async function refuse(trx: Tx, r: Refusals): Promise<void> {
  const moved = [
    ...(await store.applyEvent(trx, 'claim_refused', r.block.map((b) => ({ id: b.row.id, patch: { reason: b.reason, reservation_id: null } })))),
    ...(await store.applyEvent(trx, 'skip', r.skip.map((b) => ({ id: b.row.id, patch: { reason: b.reason, reservation_id: null } })))),
    ...(await store.applyEvent(
      trx,
      'defer',
      r.defer.map((b) => ({ id: b.row.id, patch: { reason: b.reason, reservation_id: null, next_attempt_at: b.until.toISOString() } })),
      { onlyFrom: ['queued'] },
    )),
  ];
  const movedIds = new Set(moved.map((m) => m.id));
  await scheduleDeferred(
    trx,
    r.defer.filter((d) => movedIds.has(d.row.id)).map((d) => ({ organizationId: d.row.organization_id, until: d.until })),
  );
  const all = [...r.block, ...r.skip, ...r.defer].map((x) => x.row);
  await releaseFor(
    trx,
    all.filter((m) => movedIds.has(m.id)),
    'may not be sent now',
  );
}

export async function releaseFor(trx: Tx, rows: readonly Pick<store.MessageRow, 'organization_id' | 'reservation_id'>[], reason: string) {
  for (const [org, group] of groupBy(rows, (r) => r.organization_id)) {
    const ids = group.map((r) => r.reservation_id).filter((x): x is string => x !== null);
    if (ids.length === 0) continue;
    await credits.release(trx, { organizationId: org, reservationIds: ids, idempotencyKey: `release:${newId('rsv')}`, actor: { type: 'system', id: 'send' }, reason });
  }
}

export async function captureFor(trx: Tx, rows: readonly Pick<store.MessageRow, 'organization_id' | 'reservation_id'>[], reason: string) {
  for (const [org, group] of groupBy(rows, (r) => r.organization_id)) {
    const ids = group.map((r) => r.reservation_id).filter((x): x is string => x !== null);
    if (ids.length === 0) continue;
    await credits.capture(trx, { organizationId: org, reservationIds: ids, idempotencyKey: `capture:${newId('rsv')}`, actor: { type: 'system', id: 'send' }, reason });
  }
}

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const map = new Map<string, T[]>();
  for (const item of items) map.set(key(item), [...(map.get(key(item)) ?? []), item]);
  return map;
}

interface Attempt {
  message: store.MessageRow;
  outcome: SendOutcome | { outcome: 'circuit_open'; retryAt: number } | { outcome: 'withdrawn'; reason: string; terminal: boolean };
}

/**
 * A claimed message that waited for its sender's rate slot is looked at once
 * more right before the carrier call: a STOP, a pause, a freeze or a closed
 * subscription that committed while it waited still stops it (G5, G6).
 */
async function stillMayGo(deps: SendDeps, m: store.MessageRow): Promise<{ ok: true } | { ok: false; reason: string; terminal: boolean }> {
  const { rows } = await sql<{ consent: boolean; campaign: boolean; ended: boolean; frozen: boolean; subscription: boolean; enabled: boolean }>`
    select credence_consent_allows(m.workspace_id, m.to_number, m.purpose, m.producer) as consent,
      ${CAMPAIGN_CLAIMABLE} as campaign, ${CAMPAIGN_ENDED} as ended,
      o.frozen_at is not null as frozen, credence_subscription_ok(m.organization_id) as subscription, w.sms_enabled as enabled
    from messages m join organizations o on o.id = m.organization_id join workspaces w on w.id = m.workspace_id
    where m.id = ${m.id}`.execute(deps.db);
  const r = rows[0];
  if (r === undefined) return { ok: false, reason: 'not_found', terminal: true };
  if (!r.consent) return { ok: false, reason: 'no_consent', terminal: true };
  if (r.ended) return { ok: false, reason: 'campaign_cancelled', terminal: true };
  if (!r.campaign) return { ok: false, reason: 'campaign_paused', terminal: false };
  if (r.frozen) return { ok: false, reason: 'organization_frozen', terminal: false };
  if (!r.subscription) return { ok: false, reason: 'subscription_inactive', terminal: false };
  if (!r.enabled) return { ok: false, reason: 'workspace_disabled', terminal: false };
  return { ok: true };
}

/**
 * The send step for one batch of message ids: claim, call the carrier for
 * each claimed message outside any transaction, record every outcome in one
 * transaction. Safe to run twice: only `queued` messages are claimed, and
 * outcomes apply only to messages still `sending`.
 */
export async function sendBatch(deps: SendDeps, messageIds: readonly string[]): Promise<{ attempted: number }> {
  const claimed = await claim(deps, messageIds);
  if (claimed.length === 0) return { attempted: 0 };
  const attempts = await Promise.all(claimed.map((c) => attemptOne(deps, c)));
  await record(deps, attempts);
  return { attempted: attempts.length };
}

async function attemptOne(deps: SendDeps, c: Claimed): Promise<Attempt> {
  const wait = c.notBefore - Date.now();
  if (wait > 0) {
    await sleep(wait);
    const check = await stillMayGo(deps, c.message);
    if (!check.ok) return { message: c.message, outcome: { outcome: 'withdrawn', reason: check.reason, terminal: check.terminal } };
  }
  const account = deps.carrier.accountId;
  const gate = breakerAllows(deps.breakers.get(account) ?? CLOSED, Date.now());
  deps.breakers.set(account, gate.next);
  if (!gate.allow) return { message: c.message, outcome: { outcome: 'circuit_open', retryAt: gate.retryAt ?? Date.now() + 5_000 } };
  const m = c.message;
  const outcome = await deps.carrier.send({
    messageId: m.id,
    to: m.to_number,
    from: m.from_number,
    body: m.body,
    statusCallbackUrl: statusCallbackUrl(deps.publicUrl, m.id),
  });
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
          patch: { reason: o.reason, lease_until: null, reservation_id: null, expect_attempts: m.attempts, details: { attempt: m.attempts, withdrawn: true } },
        });
        break;
      case 'circuit_open':
        // Not attempted: try again when the breaker lets a probe through.
        retry.push({
          id: m.id,
          at: o.retryAt,
          patch: { reason: 'circuit_open', next_attempt_at: new Date(o.retryAt).toISOString(), lease_until: null, expect_attempts: m.attempts },
        });
        break;
      case 'unknown':
        unknown.push({ id: m.id, patch: { reason: 'no_answer', expect_attempts: m.attempts, details: { attempt: m.attempts, reason: o.reason } } });
        break;
      default: {
        const never: never = o;
        throw new Error(`unhandled outcome ${String(never)}`);
      }
    }
  }

  await deps.db.transaction().execute(async (trx) => {
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
    const { rows: carried } = await sql<store.MessageRow>`select m.* from messages m
      join credit_reservations r on r.id = m.reservation_id and r.state = 'open'
      where m.id = any(${attempts.map((a) => a.message.id)}::text[]) and m.status in ('sent', 'delivered', 'undelivered')`.execute(trx);
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
    await captureFor(trx, carried, 'carrier accepted');
    // campaigns of this batch: completion and error threshold are looked at soon
    await scheduleCampaignCheck(
      trx,
      attempts.flatMap((a) => a.message.campaign_id ?? []),
    );
    if (optOuts.length > 0) {
      deps.log.info({ message_ids: optOuts.map((m) => m.id) }, 'carrier reports recipients opted out (21610): consent revoked');
    }
  });
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
