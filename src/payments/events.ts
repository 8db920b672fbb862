import { sql } from 'kysely';
import * as credits from '../credits/index.ts';
import type { DbOrTx, Tx } from '../db/db.ts';
import * as messaging from '../messaging/index.ts';
import { type BillingDeps, creditsArrived, fulfillSession, syncSubscription } from './billing.ts';
import { applyRefund } from './refunds.ts';
import type { PaymentEvent } from './payments.ts';

const system = { type: 'system' as const, id: 'billing' };
const str = (o: Record<string, unknown>, k: string): string | null => {
  const v = o[k];
  return typeof v === 'string' ? v : v && typeof v === 'object' && 'id' in v ? String((v as { id: unknown }).id) : null;
};
const num = (o: Record<string, unknown>, k: string): number => (typeof o[k] === 'number' ? (o[k] as number) : 0);

/** An invoice's subscription: `parent.subscription_details.subscription` since API 2025-03-31, `subscription` before. */
function invoiceSubscription(invoice: Record<string, unknown>): string | null {
  const details = (invoice.parent as { subscription_details?: Record<string, unknown> } | null | undefined)?.subscription_details;
  return (details ? str(details, 'subscription') : null) ?? str(invoice, 'subscription');
}

export type EventOutcome = 'processed' | 'duplicate' | 'ignored';

/**
 * POST /webhooks/stripe, after the signature was verified: each event id is
 * recorded once in the inbox (unique key) and processed until it succeeds.
 * Events may come twice or out of order, so handlers read Stripe's current
 * object (sessions, subscriptions) or keep the highest cumulative figure
 * (refunds) instead of trusting arrival order; every effect is idempotent.
 */
export async function handleStripeEvent(deps: BillingDeps, event: PaymentEvent): Promise<EventOutcome> {
  await sql`insert into stripe_events (id, type, created, payload) values (${event.id}, ${event.type}, ${event.created}, ${JSON.stringify(event.object)}::jsonb)
    on conflict (id) do nothing`.execute(deps.db);
  const { rows } = await sql<{ processed_at: Date | null }>`select processed_at from stripe_events where id = ${event.id}`.execute(deps.db);
  if (rows[0]?.processed_at) return 'duplicate';
  const o = event.object;
  let handled = true;
  switch (event.type) {
    case 'checkout.session.completed':
    case 'checkout.session.async_payment_succeeded':
      await fulfillSession(deps, String(o.id));
      break;
    case 'checkout.session.expired':
      await sql`update checkout_sessions set status = 'expired' where id = ${String(o.id)} and status = 'open'`.execute(deps.db);
      break;
    case 'invoice.paid':
      await invoicePaid(deps, o);
      break;
    case 'invoice.payment_failed':
    case 'customer.subscription.created':
    case 'customer.subscription.updated':
    case 'customer.subscription.deleted': {
      const sub = event.type.startsWith('invoice.') ? invoiceSubscription(o) : String(o.id);
      if (sub !== null) await syncSubscription(deps, sub);
      break;
    }
    case 'charge.refunded':
      await deps.db.transaction().execute((trx) => applyRefund(trx, str(o, 'payment_intent'), num(o, 'amount_refunded')));
      break;
    case 'charge.dispute.created': {
      const target = await disputeTarget(deps, o);
      await deps.db.transaction().execute((trx) => disputeOpened(trx, o, target));
      break;
    }
    case 'charge.dispute.closed': {
      const target = await disputeTarget(deps, o);
      await deps.db.transaction().execute((trx) => disputeClosed(trx, o, target));
      break;
    }
    default:
      handled = false;
  }
  await sql`update stripe_events set processed_at = now() where id = ${event.id} and processed_at is null`.execute(deps.db);
  return handled ? 'processed' : 'ignored';
}

/**
 * A renewal (or the first period): the plan's allowance replaces the
 * previous one, once per invoice. A paid invoice's charge is recorded with
 * what it bought (`invoice_payments`), so that a refund or a lost dispute
 * takes the same share back.
 *
 * The record is committed first, then Stripe is asked how much of the
 * charge was refunded already: a `charge.refunded` handled before that
 * commit found no record and did nothing, and its refund is in the answer;
 * one handled after it finds the record. In the second transaction the
 * record is locked before the account (the order a refund takes).
 */
async function invoicePaid(deps: BillingDeps, invoice: Record<string, unknown>): Promise<void> {
  const subId = invoiceSubscription(invoice);
  if (subId === null) return;
  await syncSubscription(deps, subId);
  const sub = await deps.payments.getSubscription(subId);
  const org = sub.metadata.organization_id;
  if (org === undefined) return;
  // the plan the invoice billed: the subscription's metadata as Stripe copied it onto the
  // invoice when it was created (a plan change after that is the next invoice's)
  const billed = (invoice.parent as { subscription_details?: { metadata?: Record<string, unknown> | null } } | null | undefined)?.subscription_details?.metadata;
  const planId = (typeof billed?.item === 'string' ? billed.item : undefined) ?? sub.metadata.item ?? '';
  const plan = deps.catalog.plans.find((p) => p.id === planId);
  const lines = (invoice.lines as { data?: { period?: { start?: number; end?: number } }[] } | undefined)?.data ?? [];
  const periodStart = lines[0]?.period?.start ?? num(invoice, 'period_start');
  const period = `${subId}:${periodStart}`;
  const invoiceId = String(invoice.id);
  const amount = plan?.monthlyCredits ?? 0;
  // An older invoice arriving late must not replace a newer period's allowance.
  const renews = async (db: DbOrTx) => {
    const { rows } = await sql<{ renewed: string | null }>`select max(allowance_period_start)::text as renewed from credit_accounts where organization_id = ${org}`.execute(db);
    return periodStart * 1000 >= (rows[0]?.renewed ? Date.parse(rows[0].renewed) : 0);
  };
  const paymentIntent = num(invoice, 'amount_paid') > 0 ? await deps.payments.invoicePaymentIntent(invoiceId) : null;
  if (paymentIntent !== null) {
    await sql`insert into invoice_payments (payment_intent, invoice_id, organization_id, amount, currency, allowance, allowance_period)
      values (${paymentIntent}, ${invoiceId}, ${org}, ${num(invoice, 'amount_paid')}, ${str(invoice, 'currency') ?? 'eur'},
        ${(await renews(deps.db)) ? amount : 0}, ${period})
      on conflict do nothing`.execute(deps.db);
  }
  const refundedSoFar = paymentIntent !== null ? await deps.payments.refundedAmount(paymentIntent) : 0;
  await deps.db.transaction().execute(async (trx) => {
    if (paymentIntent !== null) await sql`select 1 from invoice_payments where payment_intent = ${paymentIntent} for update`.execute(trx);
    // decided again under the account's lock: a newer period's renewal may have committed since
    const renewal = await credits.renewAllowance(trx, {
      organizationId: org,
      amount,
      period,
      periodStart: new Date(periodStart * 1000),
      idempotencyKey: `invoice:${invoiceId}`,
      actor: system,
      onlyIfLatest: true,
    });
    if (renewal.superseded === true) {
      // it granted nothing: a refund of this invoice has no allowance of its own to take back
      if (paymentIntent !== null) await sql`update invoice_payments set allowance = 0 where payment_intent = ${paymentIntent}`.execute(trx);
    } else {
      await creditsArrived(trx, org);
    }
    if (paymentIntent !== null && refundedSoFar > 0) await applyRefund(trx, paymentIntent, refundedSoFar);
  });
}

interface DisputeTarget {
  org: string | undefined;
  paymentIntent: string | null;
}

/**
 * The organization a dispute is about, and the payment intent it disputes:
 * its pack or invoice payment, or, for a charge we did not record (or a
 * dispute that names no payment intent), the charge's customer and intent.
 */
async function disputeTarget(deps: BillingDeps, dispute: Record<string, unknown>): Promise<DisputeTarget> {
  const pi = str(dispute, 'payment_intent');
  if (pi !== null) {
    const { rows } = await sql<{ organization_id: string }>`select organization_id from payments where payment_intent = ${pi}
      union all select organization_id from invoice_payments where payment_intent = ${pi}
      union all select organization_id from checkout_sessions where payment_intent = ${pi} limit 1`.execute(deps.db);
    if (rows[0]) return { org: rows[0].organization_id, paymentIntent: pi };
  }
  const chargeId = str(dispute, 'charge');
  if (chargeId === null) return { org: undefined, paymentIntent: pi };
  const charge = await deps.payments.getCharge(chargeId);
  const paymentIntent = pi ?? charge.paymentIntent;
  if (charge.customer === null) return { org: undefined, paymentIntent };
  const { rows } = await sql<{ organization_id: string }>`select organization_id from billing_customers where stripe_customer_id = ${charge.customer}`.execute(deps.db);
  return { org: rows[0]?.organization_id, paymentIntent };
}

/** A dispute freezes the organization's sending at once (every claim checks it). */
async function disputeOpened(trx: Tx, dispute: Record<string, unknown>, target: DisputeTarget): Promise<void> {
  const { org } = target;
  if (org === undefined) return;
  // known already (open, or closed by an event that came first): nothing more to do
  const { rows } = await sql`insert into disputes (id, organization_id, payment_intent, status)
    values (${String(dispute.id)}, ${org}, ${target.paymentIntent}, 'open') on conflict (id) do nothing returning id`.execute(trx);
  if (rows.length === 0) return;
  await sql`update organizations set frozen_at = now(), frozen_by = 'dispute' where id = ${org} and frozen_at is null`.execute(trx);
}

/** Won: unfreeze once no dispute is open (an operator's freeze stays). Lost: the credits go back, and only an operator unfreezes. */
async function disputeClosed(trx: Tx, dispute: Record<string, unknown>, target: DisputeTarget): Promise<void> {
  const { org } = target;
  // 'won', and also 'warning_closed' / 'prevented' (no money lost): only 'lost' takes credits back
  const outcome = dispute.status === 'lost' ? 'lost' : 'won';
  let { rows } = await sql<{ organization_id: string; payment_intent: string | null }>`
    update disputes set status = ${outcome}, closed_at = now(), payment_intent = coalesce(payment_intent, ${target.paymentIntent})
    where id = ${String(dispute.id)} and status = 'open'
    returning organization_id, payment_intent`.execute(trx);
  if (rows.length === 0 && org !== undefined) {
    // closed before its `created` event was handled: record the end, so the late `created` changes nothing
    ({ rows } = await sql<{ organization_id: string; payment_intent: string | null }>`
      insert into disputes (id, organization_id, payment_intent, status, closed_at)
      values (${String(dispute.id)}, ${org}, ${target.paymentIntent}, ${outcome}, now())
      on conflict (id) do nothing returning organization_id, payment_intent`.execute(trx));
    if (outcome === 'won') rows = [];
  }
  const d = rows[0];
  if (d === undefined) return;
  if (outcome === 'lost') {
    if (d.payment_intent !== null) await applyRefund(trx, d.payment_intent, Number.MAX_SAFE_INTEGER);
    // the freeze now belongs to an operator: a later won dispute does not lift it
    await sql`update organizations set frozen_at = coalesce(frozen_at, now()), frozen_by = 'operator' where id = ${d.organization_id}`.execute(trx);
    return;
  }
  const { rows: open } = await sql`select 1 from disputes where organization_id = ${d.organization_id} and status = 'open'`.execute(trx);
  if (open.length > 0) return;
  const { rows: un } = await sql`update organizations set frozen_at = null, frozen_by = null
    where id = ${d.organization_id} and frozen_by = 'dispute' returning id`.execute(trx);
  if (un.length > 0) await messaging.scheduleDispatch(trx, d.organization_id, { includeBlocked: true });
}
