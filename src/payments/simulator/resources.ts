/**
 * The objects the simulator keeps, already in the JSON shape of Stripe's
 * API (the version stripe-node 23.1.0 pins), so answering a request is a
 * copy, and the errors it answers with.
 */

export const API_VERSION = '2026-10-28.endive';
export const DAY = 86_400;
/** A simulated month: the clock moves a subscription on by this much. */
export const MONTH = 30 * DAY;

export type Metadata = Record<string, string>;

interface Base {
  id: string;
  object: string;
  livemode: false;
  created: number;
}

export interface Customer extends Base {
  object: 'customer';
  email: string | null;
  name: string | null;
  metadata: Metadata;
}

export interface Product extends Base {
  object: 'product';
  active: true;
  name: string;
  metadata: Metadata;
}

export interface Price {
  id: string;
  object: 'price';
  active: true;
  currency: string;
  unit_amount: number;
  product: string;
  type: 'one_time' | 'recurring';
  recurring: { interval: 'month'; interval_count: 1 } | null;
  livemode: false;
}

export interface LineItem {
  price: Price;
  quantity: number;
  name: string;
}

export interface CheckoutSession extends Base {
  object: 'checkout.session';
  mode: 'payment' | 'subscription';
  status: 'open' | 'complete' | 'expired';
  payment_status: 'unpaid' | 'paid' | 'no_payment_required';
  amount_subtotal: number;
  amount_total: number;
  currency: string;
  url: string | null;
  success_url: string | null;
  cancel_url: string | null;
  client_reference_id: string | null;
  customer: string | null;
  customer_email: string | null;
  customer_details: { email: string | null } | null;
  metadata: Metadata;
  payment_intent: string | null;
  subscription: string | null;
  invoice: string | null;
  expires_at: number;
}

export interface PaymentIntent extends Base {
  object: 'payment_intent';
  amount: number;
  amount_received: number;
  currency: string;
  customer: string | null;
  status: 'processing' | 'succeeded' | 'requires_payment_method' | 'canceled';
  latest_charge: string | null;
  metadata: Metadata;
}

export interface Refund extends Base {
  object: 'refund';
  amount: number;
  charge: string;
  payment_intent: string | null;
  currency: string;
  status: 'succeeded';
  reason: string | null;
  metadata: Metadata;
}

export interface Charge extends Base {
  object: 'charge';
  amount: number;
  amount_captured: number;
  amount_refunded: number;
  captured: true;
  currency: string;
  customer: string | null;
  payment_intent: string | null;
  invoice: string | null;
  paid: true;
  refunded: boolean;
  disputed: boolean;
  status: 'succeeded';
  metadata: Metadata;
  refunds: { object: 'list'; data: Refund[]; has_more: false; total_count: number; url: string };
}

export interface Dispute extends Base {
  object: 'dispute';
  amount: number;
  currency: string;
  charge: string;
  payment_intent: string | null;
  reason: 'fraudulent';
  status: 'needs_response' | 'won' | 'lost';
  metadata: Metadata;
}

export interface SubscriptionItem {
  id: string;
  object: 'subscription_item';
  price: Price;
  quantity: number;
  subscription: string;
  current_period_start: number;
  current_period_end: number;
  created: number;
}

export interface Subscription extends Base {
  object: 'subscription';
  customer: string;
  status: 'active' | 'past_due' | 'canceled';
  currency: string;
  collection_method: 'charge_automatically';
  /** Top-level period fields predate API 2025-03-31 (they now live on the items); kept because callers read them. */
  current_period_start: number;
  current_period_end: number;
  start_date: number;
  cancel_at_period_end: boolean;
  canceled_at: number | null;
  ended_at: number | null;
  latest_invoice: string | null;
  metadata: Metadata;
  items: { object: 'list'; data: SubscriptionItem[]; has_more: false; total_count: number; url: string };
}

export interface InvoiceLine {
  id: string;
  object: 'line_item';
  amount: number;
  currency: string;
  quantity: number;
  description: string;
  period: { start: number; end: number };
  price: Price;
}

export interface Invoice extends Base {
  object: 'invoice';
  customer: string;
  /** `subscription`, `charge` and `payment_intent` predate API 2025-03-31 (see `parent`); kept because callers read them. */
  subscription: string;
  charge: string | null;
  payment_intent: string | null;
  parent: { type: 'subscription_details'; subscription_details: { subscription: string; metadata: Metadata } };
  status: 'paid' | 'open';
  billing_reason: 'subscription_create' | 'subscription_cycle';
  currency: string;
  amount_due: number;
  amount_paid: number;
  amount_remaining: number;
  attempt_count: number;
  attempted: true;
  period_start: number;
  period_end: number;
  metadata: Metadata;
  lines: { object: 'list'; data: InvoiceLine[]; has_more: false; total_count: number; url: string };
}

/** A payment toward an invoice (`GET /v1/invoice_payments`): since API 2025-03-31, where an invoice's payment intent is found. */
export interface InvoicePayment {
  id: string;
  object: 'invoice_payment';
  livemode: false;
  created: number;
  amount_paid: number | null;
  amount_requested: number;
  currency: string;
  invoice: string;
  is_default: true;
  payment: { type: 'payment_intent'; payment_intent: string };
  status: 'open' | 'paid';
  status_transitions: { paid_at: number | null; canceled_at: null };
}

export type StripeObject = Customer | CheckoutSession | PaymentIntent | Charge | Refund | Dispute | Subscription | Invoice;

export interface StripeEvent {
  id: string;
  object: 'event';
  type: string;
  created: number;
  livemode: false;
  api_version: string;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
  data: { object: StripeObject; previous_attributes?: Record<string, unknown> };
}

export const list = <T>(data: T[], url: string) => ({ object: 'list' as const, data, has_more: false as const, total_count: data.length, url });

export { createRandom } from '../../shared/random.ts';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `prefix_` + base62 characters drawn from `random`, as Stripe's ids look. */
export function idMaker(random: () => number) {
  return (prefix: string, length = 24) => {
    let id = `${prefix}_`;
    for (let i = 0; i < length; i++) id += ALPHABET[Math.floor(random() * ALPHABET.length)];
    return id;
  };
}

/** An expected failure, answered as Stripe answers: `{ error: { type, code, message, param } }`. */
export class StripeSimError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
    readonly param?: string,
    readonly type = 'invalid_request_error',
  ) {
    super(message);
  }

  body() {
    const error: Record<string, string> = { type: this.type, message: this.message };
    if (this.code !== undefined) {
      error.code = this.code;
      error.doc_url = `https://stripe.com/docs/error-codes/${this.code.replaceAll('_', '-')}`;
    }
    if (this.param !== undefined) error.param = this.param;
    return { error };
  }
}

export const missing = (param: string) => new StripeSimError(400, 'parameter_missing', `Missing required param: ${param}.`, param);
export const invalid = (param: string, message: string) => new StripeSimError(400, 'parameter_invalid', message, param);
/** 404 for the object a path names; 400 for one a parameter names. */
export const noSuch = (what: string, id: string, param = 'id', status = param === 'id' ? 404 : 400) =>
  new StripeSimError(status, 'resource_missing', `No such ${what}: '${id}'`, param);

export function must<T>(map: Map<string, T>, id: string, what: string, param?: string): T {
  const found = map.get(id);
  if (found === undefined) throw noSuch(what, id, param);
  return found;
}
