/**
 * What happens at the simulated Stripe account: the objects it holds, what a
 * buyer or the passing of time does to them, and the event each change
 * emits. Expected refusals (unknown id, session not open, refund too large)
 * are thrown as StripeSimError, which the HTTP layer answers Stripe-style.
 */
import {
  API_VERSION,
  type Charge,
  type CheckoutSession,
  type Customer,
  type Dispute,
  idMaker,
  type Invoice,
  type InvoicePayment,
  type LineItem,
  list,
  type Metadata,
  must,
  noSuch,
  type PaymentIntent,
  type Product,
  type Refund,
  type StripeEvent,
  type StripeObject,
  StripeSimError,
  type Subscription,
  DAY,
} from './resources.ts';
import { createBilling } from './billing.ts';
import { createChargebacks } from './chargebacks.ts';

export interface SessionInput {
  mode: 'payment' | 'subscription';
  lines: { currency: string; unitAmount: number; quantity: number; name: string; recurring: boolean }[];
  successUrl: string | null;
  cancelUrl: string | null;
  clientReferenceId: string | null;
  metadata: Metadata;
  customer: string | null;
  customerEmail: string | null;
  /** `payment_intent_data[metadata]` / `subscription_data[metadata]`; the session's metadata when absent. */
  paymentIntentMetadata: Metadata | null;
  subscriptionMetadata: Metadata | null;
}

export interface Store {
  customers: Map<string, Customer>;
  sessions: Map<string, CheckoutSession>;
  intents: Map<string, PaymentIntent>;
  charges: Map<string, Charge>;
  refunds: Map<string, Refund>;
  disputes: Map<string, Dispute>;
  subscriptions: Map<string, Subscription>;
  invoices: Map<string, Invoice>;
  products: Map<string, Product>;
  events: Map<string, StripeEvent>;
}

/** What a session keeps that its JSON does not show. */
export interface SessionExtra {
  lines: LineItem[];
  paymentIntentMetadata: Metadata | null;
  subscriptionMetadata: Metadata | null;
}

export type World = ReturnType<typeof createWorld>;

const notOpen = (s: CheckoutSession) =>
  new StripeSimError(400, 'checkout_session_not_open', `Checkout Session ${s.id} is not open (status: ${s.status}).`, 'session');

export function createWorld(options: { baseUrl: string; random: () => number; onEvent: (event: StripeEvent) => void }) {
  const id = idMaker(options.random);
  let offset = 0;
  const now = () => Math.floor(Date.now() / 1000) + offset;
  const store: Store = {
    customers: new Map(),
    sessions: new Map(),
    intents: new Map(),
    charges: new Map(),
    refunds: new Map(),
    disputes: new Map(),
    subscriptions: new Map(),
    invoices: new Map(),
    products: new Map(),
    events: new Map(),
  };
  const extras = new Map<string, SessionExtra>();
  const log: StripeEvent[] = [];

  /** The event carries a copy: later changes to the object must not reach an event already sent. */
  function emit(type: string, object: StripeObject, previous?: Record<string, unknown>): void {
    const event: StripeEvent = {
      id: id('evt'),
      object: 'event',
      type,
      created: now(),
      livemode: false,
      api_version: API_VERSION,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      data: previous === undefined ? { object: structuredClone(object) } : { object: structuredClone(object), previous_attributes: previous },
    };
    store.events.set(event.id, event);
    log.push(event);
    options.onEvent(event);
  }

  function createCustomer(fields: { email: string | null; name: string | null; metadata: Metadata }): Customer {
    const customer: Customer = { id: id('cus', 14), object: 'customer', livemode: false, created: now(), ...fields };
    store.customers.set(customer.id, customer);
    return customer;
  }

  /** A product, under the caller's id if it gives one (Stripe refuses an id already taken). */
  function createProduct(fields: { id: string | undefined; name: string; metadata: Metadata }): Product {
    if (fields.id !== undefined && store.products.has(fields.id)) {
      throw new StripeSimError(400, 'resource_already_exists', `Product already exists.`, 'id');
    }
    const product: Product = { id: fields.id ?? id('prod', 14), object: 'product', livemode: false, created: now(), active: true, name: fields.name, metadata: fields.metadata };
    store.products.set(product.id, product);
    return product;
  }

  /** The payments toward invoices (each paid invoice has one, its default), newest first. */
  function invoicePayments(query: { invoice: string | undefined; status: string | undefined }) {
    if (query.invoice !== undefined) must(store.invoices, query.invoice, 'invoice', 'invoice');
    const data: InvoicePayment[] = [];
    for (const inv of [...store.invoices.values()].reverse()) {
      if (inv.payment_intent === null || (query.invoice !== undefined && inv.id !== query.invoice)) continue;
      const status = inv.status === 'paid' ? 'paid' : 'open';
      if (query.status !== undefined && query.status !== status) continue;
      data.push({
        id: `inpay_${inv.id.slice(3)}`,
        object: 'invoice_payment',
        livemode: false,
        created: inv.created,
        amount_paid: status === 'paid' ? inv.amount_paid : null,
        amount_requested: inv.amount_due,
        currency: inv.currency,
        invoice: inv.id,
        is_default: true,
        payment: { type: 'payment_intent', payment_intent: inv.payment_intent },
        status,
        status_transitions: { paid_at: status === 'paid' ? inv.created : null, canceled_at: null },
      });
    }
    return list(data, '/v1/invoice_payments');
  }

  /** A succeeded payment intent and its charge. */
  function collect(amount: number, currency: string, customer: string | null, metadata: Metadata, invoice: string | null) {
    const intent: PaymentIntent = {
      id: id('pi'),
      object: 'payment_intent',
      livemode: false,
      created: now(),
      amount,
      amount_received: amount,
      currency,
      customer,
      status: 'succeeded',
      latest_charge: null,
      metadata: { ...metadata },
    };
    const charge = chargeFor(intent, invoice);
    store.intents.set(intent.id, intent);
    return { intent, charge };
  }

  function chargeFor(intent: PaymentIntent, invoice: string | null): Charge {
    const chargeId = id('ch');
    const charge: Charge = {
      id: chargeId,
      object: 'charge',
      livemode: false,
      created: now(),
      amount: intent.amount,
      amount_captured: intent.amount,
      amount_refunded: 0,
      captured: true,
      currency: intent.currency,
      customer: intent.customer,
      payment_intent: intent.id,
      invoice,
      paid: true,
      refunded: false,
      disputed: false,
      status: 'succeeded',
      metadata: { ...intent.metadata },
      refunds: list([], `/v1/charges/${chargeId}/refunds`),
    };
    intent.latest_charge = charge.id;
    intent.amount_received = intent.amount;
    intent.status = 'succeeded';
    store.charges.set(charge.id, charge);
    return charge;
  }

  const billing = createBilling({ id, now, store, emit, collect, advance: (s) => (offset += s) });
  const chargebacks = createChargebacks({ id, now, store, emit });

  function createSession(input: SessionInput): CheckoutSession {
    if (input.customer !== null && !store.customers.has(input.customer)) throw noSuch('customer', input.customer, 'customer');
    const lines: LineItem[] = input.lines.map((l) => ({
      name: l.name,
      quantity: l.quantity,
      price: {
        id: id('price'),
        object: 'price',
        active: true,
        currency: l.currency,
        unit_amount: l.unitAmount,
        product: id('prod', 14),
        type: l.recurring ? 'recurring' : 'one_time',
        recurring: l.recurring ? { interval: 'month', interval_count: 1 } : null,
        livemode: false,
      },
    }));
    const total = lines.reduce((sum, l) => sum + l.price.unit_amount * l.quantity, 0);
    const sessionId = id('cs_test', 58);
    const created = now();
    const session: CheckoutSession = {
      id: sessionId,
      object: 'checkout.session',
      livemode: false,
      created,
      mode: input.mode,
      status: 'open',
      payment_status: 'unpaid',
      amount_subtotal: total,
      amount_total: total,
      currency: lines[0]?.price.currency ?? 'usd',
      url: `${options.baseUrl}/pay/${sessionId}`,
      success_url: input.successUrl,
      cancel_url: input.cancelUrl,
      client_reference_id: input.clientReferenceId,
      customer: input.customer,
      customer_email: input.customerEmail,
      customer_details: null,
      metadata: { ...input.metadata },
      payment_intent: null,
      subscription: null,
      invoice: null,
      expires_at: created + DAY,
    };
    store.sessions.set(session.id, session);
    extras.set(session.id, { lines, paymentIntentMetadata: input.paymentIntentMetadata, subscriptionMetadata: input.subscriptionMetadata });
    return session;
  }

  function ensureCustomer(s: CheckoutSession): string {
    if (s.customer === null) s.customer = createCustomer({ email: s.customer_email, name: null, metadata: {} }).id;
    s.customer_details = { email: s.customer_email ?? store.customers.get(s.customer)?.email ?? null };
    return s.customer;
  }

  function pay(sessionId: string, delayed = false): void {
    const s = must(store.sessions, sessionId, 'checkout.session');
    const extra = extras.get(s.id)!;
    if (s.status !== 'open') throw notOpen(s);
    if (delayed && s.mode !== 'payment') throw new StripeSimError(400, undefined, 'The simulator delays only payment-mode sessions.', 'delayed');
    const customer = ensureCustomer(s);
    s.status = 'complete';
    s.url = null;
    if (s.mode === 'subscription') {
      const { subscription, invoice } = billing.subscribe(customer, extra.lines, extra.subscriptionMetadata ?? s.metadata);
      s.subscription = subscription.id;
      s.invoice = invoice.id;
      s.payment_status = 'paid';
    } else if (delayed) {
      const intent: PaymentIntent = {
        id: id('pi'),
        object: 'payment_intent',
        livemode: false,
        created: now(),
        amount: s.amount_total,
        amount_received: 0,
        currency: s.currency,
        customer,
        status: 'processing',
        latest_charge: null,
        metadata: { ...(extra.paymentIntentMetadata ?? s.metadata) },
      };
      store.intents.set(intent.id, intent);
      s.payment_intent = intent.id;
    } else {
      s.payment_intent = collect(s.amount_total, s.currency, customer, extra.paymentIntentMetadata ?? s.metadata, null).intent.id;
      s.payment_status = 'paid';
    }
    emit('checkout.session.completed', s);
  }

  /** A delayed (bank-transfer-like) payment of a completed session settles, or fails. */
  function settle(sessionId: string, outcome: 'succeeded' | 'failed'): void {
    const s = must(store.sessions, sessionId, 'checkout.session');
    const intent = s.payment_intent === null ? undefined : store.intents.get(s.payment_intent);
    if (s.status !== 'complete' || s.payment_status !== 'unpaid' || intent?.status !== 'processing')
      throw new StripeSimError(400, undefined, `Checkout Session ${s.id} has no payment awaiting settlement.`, 'session');
    if (outcome === 'succeeded') {
      chargeFor(intent, null);
      s.payment_status = 'paid';
      emit('checkout.session.async_payment_succeeded', s);
    } else {
      intent.status = 'requires_payment_method';
      emit('checkout.session.async_payment_failed', s);
    }
  }

  function expire(sessionId: string): CheckoutSession {
    const s = must(store.sessions, sessionId, 'checkout.session');
    if (s.status !== 'open') throw notOpen(s);
    s.status = 'expired';
    s.url = null;
    emit('checkout.session.expired', s);
    return s;
  }

  return {
    store,
    now,
    events: () => log.map((e) => structuredClone(e)),
    lines: (sessionId: string) => extras.get(sessionId)?.lines ?? [],
    createCustomer,
    createProduct,
    createSession,
    invoicePayments,
    pay,
    settle,
    expire,
    ...billing,
    ...chargebacks,
  };
}
