import { sql } from 'kysely';
import type { Tx } from '../db/db.ts';
import { CAMPAIGN_CLAIMABLE } from './campaignGate.ts';
import { CONSENT_ALLOWS, enqueueSends, ruleColumns, scheduleDeferred, SUBSCRIPTION_OK } from './dispatch.ts';
import { applyLimits, countHourlySends, type LimitRow } from './limits.ts';
import * as store from './messages.store.ts';
import { groupBy, releaseFor } from './reservations.ts';
import { decide, type RuleColumns } from './rules.ts';
import { callWindowMs, type SendDeps, slotHorizonMs } from './send.ts';
import { scheduleSenderQueue, type SenderKey } from './senderQueue.ts';
import { takeSendSlots } from './senders.ts';

/** A claim's decisions older than this when it takes its sender slots are taken again. */
const RULES_FRESH_MS = 200;

/** How long a claimed message may stay `sending` before reconciliation looks at it (SEND_LEASE_MS). */
export const DEFAULT_LEASE_MS = 120_000;

type ClaimRow = LimitRow &
  RuleColumns & {
    frozen: boolean;
    debt: number;
  };

/** A slot this close to the end of the call window is not taken (the wait for it may run late). */
const SLOT_CALL_MARGIN_MS = 250;

/** Groups in the order of their keys: the order their sender rows are locked in. */
function sortedGroups<T>(rows: readonly T[], keyOf: (row: T) => string): [string, T[]][] {
  return [...groupBy(rows, keyOf)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
export interface Claimed {
  message: store.MessageRow;
  /** When its sender's rate allows it to go (epoch ms). */
  notBefore: number;
  /** Until when the claim's decision holds (its clock plus the slot horizon, epoch ms). */
  decidedUntil: number;
  /** The send rules again, at another instant (for a call made after `decidedUntil`): may it go then? */
  mayGoAt(at: Date): boolean;
  /** No carrier call after this (epoch ms, this process's clock, counted from before the claim began): callWindowMs. */
  callBy: number;
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
export async function claim(deps: SendDeps, ids: readonly string[]): Promise<Claimed[]> {
  const leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
  // before the transaction, so before the claimed_at reconciliation counts from
  const callBy = Date.now() + callWindowMs(deps);
  return deps.db.transaction().execute(async (trx) => {
    // Consent is looked up once, in the claim UPDATE's WHERE below (it is
    // the costliest rule to evaluate); a message it stops is examined again,
    // consent included, and refused with its reason.
    const rows = await lockQueued(trx, ids, { consent: false });
    if (rows.length < ids.length) await requeueHeld(trx, ids, rows);
    let now = new Date();
    const refused: Refusals = { block: [], skip: [], defer: [] };
    const passed = sortDecisions(deps, rows, now, refused);
    const limits = await applyLimits(trx, passed, now);
    for (const m of limits.capped) refused.skip.push({ row: m, reason: 'frequency_cap' });
    for (const { row, until } of limits.deferred) refused.defer.push({ row, reason: 'hourly_cap', until });
    const eligible = limits.allowed;

    // Sender rate: slots are taken under each sender row's lock, shared by
    // all workers, each in its own short statement outside this transaction
    // (a slot this claim then does not use is left empty, never given twice).
    // What gets no slot waits in its sender's queue (senderQueue.ts), which
    // takes it in order as the slots free up: no send job of its own.
    // No slot is taken past the call window (less a margin for the wait
    // until the slot): a message given one there could not be called, and
    // was claimed anew, taking the next slot out at the horizon, wasted in
    // turn. With claims slower than window less horizon (a loaded machine,
    // the least grace the configuration allows) that went on for good.
    const horizonMs = slotHorizonMs(deps);
    const slotHorizon = () => Math.min(horizonMs, callBy - Date.now() - SLOT_CALL_MARGIN_MS);
    let go: { message: ClaimRow; notBefore: number }[] = [];
    const later: { ids: string[]; at: number; sender: SenderKey }[] = [];
    for (const [, group] of sortedGroups(eligible, (m) => `${m.workspace_id}\u0000${m.from_number}`)) {
      const first = group[0]!;
      const slots = await takeSendSlots(deps.db, first.workspace_id, first.from_number, group.length, slotHorizon());
      group.forEach((m, i) => {
        if (i < slots.granted) go.push({ message: m, notBefore: slots.startAt + i * slots.intervalMs });
      });
      if (slots.granted < group.length) {
        later.push({ ids: group.slice(slots.granted).map((m) => m.id), at: slots.nextFreeAt, sender: { workspaceId: first.workspace_id, fromNumber: first.from_number } });
      }
    }
    for (const l of later) {
      await sql`update messages set next_attempt_at = ${new Date(l.at)}, status_reason = 'sender_rate', updated_at = now()
        where id = any(${l.ids}::text[])`.execute(trx);
      await scheduleSenderQueue(trx, l.sender, new Date(l.at));
    }

    // The rules were decided at \`now\`; the cap locks and sender rows above may
    // have waited behind other claims since. Decided again on a fresh clock,
    // so the recipient's window holds from here to the slot horizon (G5: a
    // message claimed just before its window closed went after it). A slot
    // taken for one refused now is left empty.
    if (Date.now() - now.getTime() > RULES_FRESH_MS) {
      now = new Date();
      const going = new Set(go.map((g) => g.message.id));
      const fresh = new Set(sortDecisions(deps, eligible.filter((m) => going.has(m.id)), now, refused).map((m) => m.id));
      go = go.filter((g) => fresh.has(g.message.id));
    }
    let claimed: store.MessageRow[] = [];
    if (go.length > 0) {
      // The claim itself: one conditional UPDATE, gates and consent repeated in its WHERE.
      // It returns only what it changed; the rest of each row is as locked above.
      const { rows: changed } = await sql<Pick<store.MessageRow, 'id' | 'attempts' | 'claimed_at' | 'lease_until' | 'updated_at'>>`
        with c as (
          update messages m set status = 'sending', attempts = m.attempts + 1, claimed_at = now(),
            lease_until = now() + ${`${leaseMs} milliseconds`}::interval, next_attempt_at = null, updated_at = now()
          from organizations o, workspaces w
          where m.id = any(${go.map((g) => g.message.id)}::text[]) and ${store.statusOfListed('m', ['queued'])}
            and o.id = m.organization_id and o.frozen_at is null
            and w.id = m.workspace_id and w.sms_enabled
            and m.country = any(coalesce(w.allowed_countries, array[w.home_country]))
            and not exists (select 1 from credit_accounts a where a.organization_id = m.organization_id and a.debt > 0)
            and ${CONSENT_ALLOWS}
            and ${CAMPAIGN_CLAIMABLE}
            and ${SUBSCRIPTION_OK}
          returning m.id, m.organization_id, m.attempts, m.claimed_at, m.lease_until, m.updated_at
        ), ev as (
          insert into message_events (message_id, organization_id, event, from_status, to_status, details)
          select id, organization_id, 'claim', 'queued', 'sending', jsonb_build_object('attempt', attempts) from c
        )
        select id, attempts, claimed_at, lease_until, updated_at from c`.execute(trx);
      const locked = new Map(eligible.map((m) => [m.id, m]));
      claimed = changed.map((c) => ({ ...locked.get(c.id)!, ...c, status: 'sending', next_attempt_at: null }));
      const claimedIds = new Set(claimed.map((m) => m.id));
      await countHourlySends(
        trx,
        eligible.filter((m) => claimedIds.has(m.id)),
      );
      // Stopped by the UPDATE's WHERE: no consent (not looked at above), or a
      // gate that closed since. Examined again, consent included, and refused
      // with the reason (they are still queued, and locked by this transaction).
      const missed = go.filter((g) => !claimedIds.has(g.message.id)).map((g) => g.message.id);
      const again = sortDecisions(deps, await lockQueued(trx, missed, { consent: true }), new Date(), refused);
      // The rules let these go, yet the UPDATE did not: a gate moved in between; look again shortly.
      if (again.length > 0) {
        await enqueueSends(trx, again.map((m) => m.id), new Date(Date.now() + 1_000));
      }
    }
    // Last, so the account lock is the final lock this transaction takes.
    await refuse(trx, refused);
    const byId = new Map(go.map((g) => [g.message.id, g.notBefore]));
    const rulesOf = new Map(eligible.map((m) => [m.id, m]));
    const decidedUntil = now.getTime() + slotHorizonMs(deps);
    return claimed.map((m) => {
      const row = rulesOf.get(m.id)!;
      return {
        message: m,
        notBefore: byId.get(m.id) ?? Date.now(),
        decidedUntil,
        callBy,
        mayGoAt: (at: Date) => decide(row, { organizationFrozen: row.frozen, workspaceSmsEnabled: row.sms_enabled, debt: row.debt }, at).action === 'go',
      };
    });
  });
}

/** The batch's queued, due messages, locked, with every column the send rules need. */
async function lockQueued(trx: Tx, ids: readonly string[], options: { consent: boolean }): Promise<ClaimRow[]> {
  if (ids.length === 0) return [];
  const { rows } = await sql<ClaimRow>`
    select m.*, ${ruleColumns('claim', options)}, w.frequency_caps, w.hourly_cap,
      o.frozen_at is not null as frozen, coalesce(a.debt, 0)::bigint as debt
    from messages m
    join workspaces w on w.id = m.workspace_id
    join organizations o on o.id = m.organization_id
    left join credit_accounts a on a.organization_id = m.organization_id
    where m.id = any(${[...ids]}::text[]) and ${store.statusOfListed('m', ['queued'])}
      and coalesce(m.next_attempt_at, m.send_at) <= now()
    order by m.id
    for update of m skip locked`.execute(trx);
  return rows;
}

/** How long a queued message another transaction held at its claim waits before it is tried again. */
const HELD_RETRY_MS = 1_000;

/**
 * The lock above skips messages another transaction holds, and this send
 * job is then done with them: left alone they would wait, queued, for the
 * sweep (two maintenance intervals, 2–3 minutes). The holder may well leave
 * them queued:
 * - a dispatch whose statement began before another dispatch queued the
 *   message keeps the lock it took on the new row version, though that row
 *   no longer matched its query (PostgreSQL's READ COMMITTED recheck locks
 *   first, then filters), until it commits;
 * - a campaign pause locks its queued messages and leaves them queued, for
 *   the next claim to refuse.
 * So the ones still queued and due, as far as committed data tells, get a
 * send job of their own a moment later. One that has moved on by then is
 * not claimed again (only `queued` is).
 */
async function requeueHeld(trx: Tx, ids: readonly string[], locked: readonly ClaimRow[]): Promise<void> {
  const got = new Set(locked.map((m) => m.id));
  const { rows } = await sql<{ id: string }>`
    select id from messages
    where id = any(${ids.filter((id) => !got.has(id))}::text[]) and ${store.statusOfListed('messages', ['queued'])}
      and coalesce(next_attempt_at, send_at) <= now()`.execute(trx);
  if (rows.length === 0) return;
  await enqueueSends(trx, rows.map((r) => r.id), new Date(Date.now() + HELD_RETRY_MS));
}

/** The send rules for each message: those that may go now are returned, the rest added to `refused`. */
function sortDecisions(deps: SendDeps, rows: readonly ClaimRow[], now: Date, refused: Refusals): ClaimRow[] {
  const passed: ClaimRow[] = [];
  for (const m of rows) {
    // the carrier call may wait up to the slot horizon: the window must be open until then
    const d = decide(m, { organizationFrozen: m.frozen, workspaceSmsEnabled: m.sms_enabled, debt: m.debt }, now, slotHorizonMs(deps));
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
  return passed;
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

