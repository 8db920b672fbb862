import { sql } from 'kysely';
import * as campaigns from '../campaigns/index.ts';
import * as credits from '../credits/index.ts';
import type { Db, Tx } from '../db/db.ts';
import * as messaging from '../messaging/index.ts';
import { DomainError, validationError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { Catalog } from './catalog.ts';
import type { Payments, SessionView } from './payments.ts';
import { applyRefund } from './refunds.ts';

/** What billing needs from the process (wired once in main.ts). */
export interface BillingDeps {
  db: Db;
  payments: Payments;
  catalog: Catalog;
  publicUrl: string;
  /** how long a past_due subscription may still send */
  pastDueGraceMs: number;
  log: Logger;
}

const system = { type: 'system' as const, id: 'billing' };

export async function startCheckout(
  deps: BillingDeps,
  organizationId: string,
  input: { kind: 'pack' | 'plan'; item: string; success_url?: string; cancel_url?: string },
): Promise<{ session_id: string; url: string }> {
  const pack = input.kind === 'pack' ? deps.catalog.packs.find((p) => p.id === input.item) : undefined;
  const plan = input.kind === 'plan' ? deps.catalog.plans.find((p) => p.id === input.item) : undefined;
  const choice = pack ?? plan;
  if (choice === undefined) {
    const ids = (input.kind === 'pack' ? deps.catalog.packs : deps.catalog.plans).map((x) => x.id);
    throw validationError('item', `must be one of ${ids.join(', ')}`);
  }
  if (plan !== undefined && plan.amount === 0) throw validationError('item', 'the free plan needs no checkout');
  if (plan !== undefined) {
    const { rows: current } = await sql<{ status: string }>`select status from subscriptions where organization_id = ${organizationId}`.execute(deps.db);
    if (current[0] && ['active', 'trialing', 'past_due', 'incomplete'].includes(current[0].status)) {
      throw new DomainError('conflict', 'This organization already has a subscription: an operator changes its plan (POST /v1/organizations/{id}/plan).');
    }
  }
  const { rows: customer } = await sql<{ stripe_customer_id: string }>`
    select stripe_customer_id from billing_customers where organization_id = ${organizationId}`.execute(deps.db);
  const session = await deps.payments.createCheckout({
    organizationId,
    kind: input.kind,
    item: choice.id,
    name: choice.name,
    amount: choice.amount,
    currency: choice.currency,
    credits: pack?.credits ?? plan?.monthlyCredits ?? 0,
    successUrl: input.success_url ?? `${deps.publicUrl}/billing/return?session_id={CHECKOUT_SESSION_ID}`,
    cancelUrl: input.cancel_url ?? `${deps.publicUrl}/billing/return?cancelled=1`,
    ...(customer[0] && { customerId: customer[0].stripe_customer_id }),
  });
  await sql`insert into checkout_sessions (id, organization_id, kind, item, credits, amount, currency, status)
    values (${session.id}, ${organizationId}, ${input.kind}, ${choice.id}, ${pack?.credits ?? plan?.monthlyCredits ?? 0},
      ${choice.amount}, ${choice.currency}, 'open')`.execute(deps.db);
  return { session_id: session.id, url: session.url };
}

export type FulfillResult = 'fulfilled' | 'already_fulfilled' | 'not_paid' | 'unknown_session';

/**
 * Grant what a paid Checkout Session bought, exactly once: from the webhook
 * or the return URL, whichever comes first, however often. Stripe's own view
 * of the session decides whether it is paid (never the caller's payload).
 */
export async function fulfillSession(deps: BillingDeps, sessionId: string): Promise<FulfillResult> {
  let { rows: known } = await sql<{ status: string; organization_id: string; kind: string }>`
    select status, organization_id, kind from checkout_sessions where id = ${sessionId}`.execute(deps.db);
  if (known[0]?.status === 'fulfilled') {
    await settleLateRefunds(deps, sessionId);
    return 'already_fulfilled';
  }
  const session = await deps.payments.getSession(sessionId);
  if (known[0] === undefined) {
    // Our row never got written (a crash between Stripe and our insert): rebuild it from the metadata we gave Stripe.
    if (!(await rebuildSession(deps, session))) return 'unknown_session';
    ({ rows: known } = await sql<{ status: string; organization_id: string; kind: string }>`
      select status, organization_id, kind from checkout_sessions where id = ${sessionId}`.execute(deps.db));
    if (known[0] === undefined) return 'unknown_session';
  }
  if (session.paymentStatus !== 'paid') return 'not_paid';
  // a refund may have come before this fulfilment: take it into account below
  const refundedSoFar = known[0].kind === 'pack' && session.paymentIntent !== null ? await deps.payments.refundedAmount(session.paymentIntent) : 0;
  if (session.metadata.organization_id !== known[0].organization_id) {
    deps.log.error({ session_id: sessionId }, 'checkout session metadata does not match its organization');
    return 'unknown_session';
  }
  const result = await deps.db.transaction().execute(async (trx): Promise<FulfillResult> => {
    // Subscription writes are serialised per subscription, each with a read of Stripe taken under the lock.
    if (session.subscription !== null) await lockSubscription(trx, session.subscription);
    const sub = session.subscription !== null ? await deps.payments.getSubscription(session.subscription) : undefined;
    const { rows } = await sql<{ status: string; organization_id: string; kind: 'pack' | 'plan'; item: string; credits: number; amount: number; currency: string }>`
      select * from checkout_sessions where id = ${sessionId} for update`.execute(trx);
    const row = rows[0]!;
    if (row.status === 'fulfilled') return 'already_fulfilled';
    const org = row.organization_id;
    if (session.customer !== null) {
      await sql`insert into billing_customers (organization_id, stripe_customer_id) values (${org}, ${session.customer})
        on conflict (organization_id) do nothing`.execute(trx);
    }
    if (row.kind === 'pack' && session.paymentIntent !== null) {
      await sql`insert into payments (payment_intent, organization_id, session_id, amount, currency, credits)
        values (${session.paymentIntent}, ${org}, ${sessionId}, ${session.amountTotal ?? row.amount}, ${row.currency}, ${row.credits})
        on conflict do nothing`.execute(trx);
      await credits.purchase(trx, { organizationId: org, amount: row.credits, idempotencyKey: `checkout:${sessionId}`, actor: system, paymentRef: sessionId, reason: `pack ${row.item}` });
      if (refundedSoFar > 0) await applyRefund(trx, session.paymentIntent, refundedSoFar);
      // a dispute lost before this fulfilment (recorded, but it found no payment to take back from): the whole pack goes back
      const { rows: lost } = await sql`select 1 from disputes where payment_intent = ${session.paymentIntent} and status = 'lost' limit 1`.execute(trx);
      if (lost.length > 0) await applyRefund(trx, session.paymentIntent, Number.MAX_SAFE_INTEGER);
      await creditsArrived(trx, org);
    }
    if (sub !== undefined) await applySubscription(deps, trx, org, row.item, sub);
    await sql`update checkout_sessions set status = 'fulfilled', fulfilled_at = now(), payment_intent = ${session.paymentIntent},
      stripe_subscription_id = ${session.subscription} where id = ${sessionId}`.execute(trx);
    return 'fulfilled';
  });
  // A `charge.refunded` handled after the read above and before that commit found no
  // payment to act on; asked again now, Stripe's answer holds it (a refund after this
  // read finds the payment recorded). Refunds keep the highest amount: nothing twice.
  if (result === 'fulfilled' || result === 'already_fulfilled') await settleLateRefunds(deps, sessionId);
  return result;
}

/**
 * A fulfilled pack's refunds, asked of Stripe again whenever its session is
 * handled again (the webhook redelivered, the return URL): the fulfilment may
 * have committed while a refund Stripe had already made went unapplied (the
 * check after the commit failed, and the webhook's retry came here). Stripe
 * is asked only when a refund could be missing from our row's view, and a
 * failure is thrown, so a webhook is retried rather than marked done.
 * `applyRefund` keeps the highest amount: nothing is taken twice.
 */
async function settleLateRefunds(deps: BillingDeps, sessionId: string): Promise<void> {
  const { rows } = await sql<{ payment_intent: string | null; amount: number | null; refunded_amount: number | null }>`
    select s.payment_intent, p.amount, p.refunded_amount from checkout_sessions s
    left join payments p on p.payment_intent = s.payment_intent
    where s.id = ${sessionId} and s.kind = 'pack'`.execute(deps.db);
  const r = rows[0];
  if (r === undefined || r.payment_intent === null || r.amount === null || (r.refunded_amount ?? 0) >= r.amount) return;
  const pi = r.payment_intent;
  const refunded = await deps.payments.refundedAmount(pi);
  if (refunded > (r.refunded_amount ?? 0)) await deps.db.transaction().execute((trx) => applyRefund(trx, pi, refunded));
}

/** A session Stripe has but we never recorded: rebuilt from its metadata and the catalog, or false. */
async function rebuildSession(deps: BillingDeps, session: SessionView): Promise<boolean> {
  const org = session.metadata.organization_id;
  const kind = session.metadata.kind;
  const item = session.metadata.item;
  if (org === undefined || (kind !== 'pack' && kind !== 'plan') || item === undefined) return false;
  const pack = kind === 'pack' ? deps.catalog.packs.find((x) => x.id === item) : undefined;
  const plan = kind === 'plan' ? deps.catalog.plans.find((x) => x.id === item) : undefined;
  const choice = pack ?? plan;
  if (choice === undefined) return false;
  const { rows } = await sql`select 1 from organizations where id = ${org}`.execute(deps.db);
  if (rows.length === 0) return false;
  await sql`insert into checkout_sessions (id, organization_id, kind, item, credits, amount, currency, status)
    values (${session.id}, ${org}, ${kind}, ${item}, ${pack?.credits ?? plan?.monthlyCredits ?? 0}, ${choice.amount}, ${choice.currency}, 'open')
    on conflict (id) do nothing`.execute(deps.db);
  deps.log.warn({ session_id: session.id, organization_id: org }, 'checkout session rebuilt from Stripe metadata');
  return true;
}

/** Credits arrived: campaigns paused for them resume, blocked messages are dispatched again. */
async function creditsArrived(trx: Tx, organizationId: string): Promise<void> {
  await campaigns.resumeCampaignsForCredits(trx, organizationId, 'billing');
  await messaging.scheduleDispatch(trx, organizationId, { includeBlocked: true });
}

/** Write Stripe's current view of a subscription; reopen sending when it became good again. */
async function applySubscription(
  deps: BillingDeps,
  trx: Tx,
  organizationId: string,
  plan: string,
  sub: { id: string; status: string; periodStart: Date | null; periodEnd: Date | null },
): Promise<void> {
  const { rows: before } = await sql<{ ok: boolean }>`select credence_subscription_ok(${organizationId}) as ok`.execute(trx);
  await sql`insert into subscriptions (organization_id, stripe_subscription_id, plan, status, current_period_start, current_period_end, grace_until)
    values (${organizationId}, ${sub.id}, ${plan}, ${sub.status}, ${sub.periodStart}, ${sub.periodEnd},
      ${sub.status === 'past_due' ? new Date(Date.now() + deps.pastDueGraceMs) : null})
    on conflict (organization_id) do update set stripe_subscription_id = excluded.stripe_subscription_id, plan = excluded.plan,
      status = excluded.status, current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end,
      -- the grace period starts when it first became past_due
      grace_until = case when excluded.status <> 'past_due' then null
                         when subscriptions.status = 'past_due' then subscriptions.grace_until else excluded.grace_until end,
      updated_at = now()
    -- another subscription replaces the recorded one only once that one has ended
    where subscriptions.stripe_subscription_id = excluded.stripe_subscription_id
       or subscriptions.status in ('canceled', 'incomplete_expired', 'unpaid')`.execute(trx);
  const { rows: after } = await sql<{ ok: boolean }>`select credence_subscription_ok(${organizationId}) as ok`.execute(trx);
  if (!before[0]!.ok && after[0]!.ok) {
    await campaigns.resumeCampaignsForSubscription(trx, organizationId, 'billing');
    await messaging.scheduleDispatch(trx, organizationId, { includeBlocked: true });
  }
  if (before[0]!.ok && !after[0]!.ok) deps.log.info({ organization_id: organizationId, status: sub.status }, 'subscription can no longer send');
}

export { creditsArrived };

/**
 * Operator plan change: the subscription's plan changes now, at Stripe (its
 * price, billed from the next invoice without proration, and its metadata)
 * and in our row; the allowance follows at the next renewal.
 */
export async function changePlan(
  deps: BillingDeps,
  organizationId: string,
  plan: string,
  /** Runs in the transaction that records the change (the operator's audit record). */
  recorded?: (trx: Tx, result: { plan: string; subscription_id: string }) => Promise<void>,
): Promise<{ plan: string; subscription_id: string }> {
  const target = deps.catalog.plans.find((p) => p.id === plan && p.amount > 0);
  if (target === undefined) {
    throw validationError('plan', `must be a paid plan: ${deps.catalog.plans.filter((p) => p.amount > 0).map((p) => p.id).join(', ')}`);
  }
  const { rows } = await sql<{ stripe_subscription_id: string }>`select stripe_subscription_id from subscriptions where organization_id = ${organizationId}`.execute(deps.db);
  const sub = rows[0];
  if (sub === undefined) throw new DomainError('conflict', 'This organization has no subscription; it buys a plan through checkout first.');
  await deps.payments.changeSubscriptionPlan(sub.stripe_subscription_id, target);
  const result = { plan, subscription_id: sub.stripe_subscription_id };
  // our row and its audit record together (Stripe's own change is its webhook's to sync, should this fail)
  await deps.db.transaction().execute(async (trx) => {
    await sql`update subscriptions set plan = ${plan}, updated_at = now() where organization_id = ${organizationId}`.execute(trx);
    await recorded?.(trx, result);
  });
  return result;
}

/** Stripe's view of a subscription, for an event about it (arrival order does not matter). */
export async function syncSubscription(deps: BillingDeps, subscriptionId: string): Promise<void> {
  await deps.db.transaction().execute(async (trx) => {
    // The last writer holds the newest read: a slow handler cannot put back an older state.
    await lockSubscription(trx, subscriptionId);
    const sub = await deps.payments.getSubscription(subscriptionId);
    const org = sub.metadata.organization_id;
    if (org === undefined) return;
    await applySubscription(deps, trx, org, sub.metadata.item ?? 'pro', sub);
  });
}

async function lockSubscription(trx: Tx, subscriptionId: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${`subscription:${subscriptionId}`}, 0))`.execute(trx);
}

