/**
 * Subscriptions on the simulated clock: the first invoice at checkout, a
 * renewal invoice each time the clock moves a month, a renewal that fails
 * on request (past_due), cancellation now or at the period's end.
 */
import {
  type Charge,
  must,
  type Invoice,
  type LineItem,
  list,
  invalid,
  type Metadata,
  MONTH,
  noSuch,
  type PaymentIntent,
  type StripeObject,
  StripeSimError,
  type Subscription,
} from './resources.ts';
import type { ItemPriceUpdate } from './params.ts';
import type { Store } from './world.ts';

interface Deps {
  id: (prefix: string, length?: number) => string;
  now: () => number;
  store: Store;
  emit: (type: string, object: StripeObject, previous?: Record<string, unknown>) => void;
  collect: (amount: number, currency: string, customer: string | null, metadata: Metadata, invoice: string | null) => { intent: PaymentIntent; charge: Charge };
  /** Move the simulated clock on by this many seconds. */
  advance: (seconds: number) => void;
}

/** Apply Stripe's metadata update rule: an empty value removes the key. */
export function mergeMetadata(current: Metadata, update: Metadata): Metadata {
  const next = { ...current };
  for (const [k, v] of Object.entries(update)) {
    if (v === '') delete next[k];
    else next[k] = v;
  }
  return next;
}

export function createBilling({ id, now, store, emit, collect, advance }: Deps) {
  const failing = new Set<string>();
  /** Product names by price id, for invoice line descriptions (a Price carries no name). */
  const names = new Map<string, string>();

  function invoiceFor(sub: Subscription, reason: Invoice['billing_reason'], paid: boolean): Invoice {
    const invoiceId = id('in');
    const start = sub.current_period_start;
    const end = sub.current_period_end;
    const lines = sub.items.data.map((item) => ({
      id: id('il'),
      object: 'line_item' as const,
      amount: item.price.unit_amount * item.quantity,
      currency: item.price.currency,
      quantity: item.quantity,
      description: `${item.quantity} × ${names.get(item.price.id) ?? item.price.product} (at ${item.price.unit_amount} / month)`,
      period: { start, end },
      price: item.price,
    }));
    const due = lines.reduce((sum, l) => sum + l.amount, 0);
    const payment = paid ? collect(due, sub.currency, sub.customer, {}, invoiceId) : undefined;
    const invoice: Invoice = {
      id: invoiceId,
      object: 'invoice',
      livemode: false,
      created: now(),
      customer: sub.customer,
      subscription: sub.id,
      charge: payment?.charge.id ?? null,
      payment_intent: payment?.intent.id ?? null,
      parent: { type: 'subscription_details', subscription_details: { subscription: sub.id, metadata: { ...sub.metadata } } },
      status: paid ? 'paid' : 'open',
      billing_reason: reason,
      currency: sub.currency,
      amount_due: due,
      amount_paid: paid ? due : 0,
      amount_remaining: paid ? 0 : due,
      attempt_count: 1,
      attempted: true,
      period_start: start,
      period_end: end,
      metadata: {},
      lines: list(lines, `/v1/invoices/${invoiceId}/lines`),
    };
    store.invoices.set(invoice.id, invoice);
    sub.latest_invoice = invoice.id;
    return invoice;
  }

  function subscribe(customer: string, lines: LineItem[], metadata: Metadata) {
    const subId = id('sub');
    const start = now();
    for (const l of lines) names.set(l.price.id, l.name);
    const items = lines.map((l) => ({
      id: id('si', 14),
      object: 'subscription_item' as const,
      price: l.price,
      quantity: l.quantity,
      subscription: subId,
      current_period_start: start,
      current_period_end: start + MONTH,
      created: start,
    }));
    const subscription: Subscription = {
      id: subId,
      object: 'subscription',
      livemode: false,
      created: start,
      customer,
      status: 'active',
      currency: lines[0]?.price.currency ?? 'usd',
      collection_method: 'charge_automatically',
      current_period_start: start,
      current_period_end: start + MONTH,
      start_date: start,
      cancel_at_period_end: false,
      canceled_at: null,
      ended_at: null,
      latest_invoice: null,
      metadata: { ...metadata },
      items: list(items, `/v1/subscription_items?subscription=${subId}`),
    };
    store.subscriptions.set(subId, subscription);
    const invoice = invoiceFor(subscription, 'subscription_create', true);
    emit('customer.subscription.created', subscription);
    emit('invoice.paid', invoice);
    return { subscription, invoice };
  }

  function end(sub: Subscription, at: number): void {
    const previous = { status: sub.status };
    sub.status = 'canceled';
    sub.canceled_at ??= now();
    sub.ended_at = at;
    emit('customer.subscription.deleted', sub, previous);
  }

  /** The subscription enters its next period and its invoice is paid, or fails when asked to. */
  function renew(sub: Subscription): void {
    const previous: Record<string, unknown> = {
      current_period_start: sub.current_period_start,
      current_period_end: sub.current_period_end,
      latest_invoice: sub.latest_invoice,
    };
    const start = sub.current_period_end;
    sub.current_period_start = start;
    sub.current_period_end = start + MONTH;
    for (const item of sub.items.data) {
      item.current_period_start = start;
      item.current_period_end = start + MONTH;
    }
    const fails = failing.delete(sub.id);
    const invoice = invoiceFor(sub, 'subscription_cycle', !fails);
    const status = fails ? 'past_due' : 'active';
    if (sub.status !== status) previous.status = sub.status;
    sub.status = status;
    if (fails) {
      emit('invoice.payment_failed', invoice);
      emit('customer.subscription.updated', sub, previous);
    } else {
      emit('customer.subscription.updated', sub, previous);
      emit('invoice.paid', invoice);
    }
  }

  function live(subscriptionId: string): Subscription {
    const sub = must(store.subscriptions, subscriptionId, 'subscription');
    if (sub.status === 'canceled')
      throw new StripeSimError(400, undefined, `Subscription ${sub.id} is canceled; a canceled subscription cannot be changed.`, 'subscription');
    return sub;
  }

  return {
    subscribe,
    /**
     * A month passes: every subscription not canceled enters its next period
     * (past_due ones too, so a paid renewal brings them back to active), or
     * ends there when it was set to cancel at the period's end.
     */
    advanceClock(): void {
      advance(MONTH);
      for (const sub of store.subscriptions.values()) {
        if (sub.status === 'canceled') continue;
        if (sub.cancel_at_period_end) end(sub, sub.current_period_end);
        else renew(sub);
      }
    },
    failNextRenewal(subscriptionId: string): void {
      failing.add(live(subscriptionId).id);
    },
    cancelSubscription(subscriptionId: string): Subscription {
      const sub = live(subscriptionId);
      end(sub, now());
      return sub;
    },
    /** `metadata: null` clears it; otherwise it is merged (an empty value removes its key). */
    updateSubscription(
      subscriptionId: string,
      update: { cancelAtPeriodEnd?: boolean; metadata?: Metadata | null; items?: readonly ItemPriceUpdate[] | undefined },
    ): Subscription {
      const sub = live(subscriptionId);
      const previous: Record<string, unknown> = {};
      if (update.items !== undefined && update.items.length > 0) {
        // checked whole before anything changes: a refused request changes nothing
        const changes = update.items.map((u, i) => {
          const item = sub.items.data.find((x) => x.id === u.id);
          if (item === undefined) throw noSuch('subscription_item', u.id, `items[${i}][id]`);
          const product = store.products.get(u.product);
          if (product === undefined) throw noSuch('product', u.product, `items[${i}][price_data][product]`);
          if (u.currency !== sub.currency) throw invalid(`items[${i}][price_data][currency]`, `The price's currency must be the subscription's (${sub.currency}).`);
          return { item, product, u };
        });
        previous.items = structuredClone(sub.items);
        for (const { item, product, u } of changes) {
          // the next invoice bills the new price; no proration (the request said proration_behavior=none)
          item.price = {
            id: id('price'),
            object: 'price',
            active: true,
            currency: u.currency,
            unit_amount: u.unitAmount,
            product: product.id,
            type: 'recurring',
            recurring: { interval: 'month', interval_count: 1 },
            livemode: false,
          };
          names.set(item.price.id, product.name);
        }
      }
      if (update.cancelAtPeriodEnd !== undefined && update.cancelAtPeriodEnd !== sub.cancel_at_period_end) {
        previous.cancel_at_period_end = sub.cancel_at_period_end;
        sub.cancel_at_period_end = update.cancelAtPeriodEnd;
        sub.canceled_at = update.cancelAtPeriodEnd ? now() : null;
      }
      if (update.metadata !== undefined) {
        previous.metadata = sub.metadata;
        sub.metadata = update.metadata === null ? {} : mergeMetadata(sub.metadata, update.metadata);
      }
      if (Object.keys(previous).length > 0) emit('customer.subscription.updated', sub, previous);
      return sub;
    },
  };
}
