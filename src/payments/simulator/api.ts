/**
 * The slice of Stripe's v1 REST API Credence uses, as plain functions from
 * (method, path, parameters) to (status, JSON). Authentication and
 * idempotency keys are the HTTP layer's (server.ts).
 */
import type { FormObject } from './form.ts';
import { customerInput, invoicePaymentsQuery, only, productInput, refundInput, sessionInput, subscriptionUpdate } from './params.ts';
import { must, StripeSimError } from './resources.ts';
import type { World } from './world.ts';

export interface ApiAnswer {
  status: number;
  body: unknown;
}

type Handler = (world: World, id: string, form: FormObject) => unknown;

const ok = (body: unknown): ApiAnswer => ({ status: 200, body: structuredClone(body) });

/** `METHOD /v1/path/:id` → handler; `:id` matches one path segment. */
const ROUTES: [string, RegExp, Handler][] = [
  ['POST', /^\/v1\/checkout\/sessions$/, (w, _id, f) => w.createSession(sessionInput(f))],
  ['GET', /^\/v1\/checkout\/sessions\/([^/]+)$/, (w, id) => must(w.store.sessions, id, 'checkout.session')],
  [
    'POST',
    /^\/v1\/checkout\/sessions\/([^/]+)\/expire$/,
    (w, id, f) => {
      only(f, []);
      return w.expire(id);
    },
  ],
  ['POST', /^\/v1\/customers$/, (w, _id, f) => w.createCustomer(customerInput(f))],
  ['GET', /^\/v1\/customers\/([^/]+)$/, (w, id) => must(w.store.customers, id, 'customer')],
  ['POST', /^\/v1\/products$/, (w, _id, f) => w.createProduct(productInput(f))],
  ['GET', /^\/v1\/products\/([^/]+)$/, (w, id) => must(w.store.products, id, 'product')],
  ['GET', /^\/v1\/subscriptions\/([^/]+)$/, (w, id) => must(w.store.subscriptions, id, 'subscription')],
  ['POST', /^\/v1\/subscriptions\/([^/]+)$/, (w, id, f) => w.updateSubscription(id, subscriptionUpdate(f))],
  [
    'DELETE',
    /^\/v1\/subscriptions\/([^/]+)$/,
    (w, id, f) => {
      only(f, ['invoice_now', 'prorate', 'cancellation_details']);
      return w.cancelSubscription(id);
    },
  ],
  ['GET', /^\/v1\/charges\/([^/]+)$/, (w, id) => must(w.store.charges, id, 'charge')],
  ['GET', /^\/v1\/payment_intents\/([^/]+)$/, (w, id) => must(w.store.intents, id, 'payment_intent')],
  ['POST', /^\/v1\/refunds$/, (w, _id, f) => w.refund(refundInput(f))],
  ['GET', /^\/v1\/refunds\/([^/]+)$/, (w, id) => must(w.store.refunds, id, 'refund')],
  ['GET', /^\/v1\/disputes\/([^/]+)$/, (w, id) => must(w.store.disputes, id, 'dispute')],
  ['GET', /^\/v1\/invoice_payments$/, (w, _id, f) => w.invoicePayments(invoicePaymentsQuery(f))],
  ['GET', /^\/v1\/invoices\/([^/]+)$/, (w, id) => must(w.store.invoices, id, 'invoice')],
  ['GET', /^\/v1\/events\/([^/]+)$/, (w, id) => must(w.store.events, id, 'event')],
];

export function callApi(world: World, method: string, path: string, form: FormObject): ApiAnswer {
  for (const [m, re, handler] of ROUTES) {
    const match = re.exec(path);
    if (match === null || m !== method) continue;
    try {
      return ok(handler(world, decodeURIComponent(match[1] ?? ''), form));
    } catch (err) {
      if (err instanceof StripeSimError) return { status: err.status, body: err.body() };
      throw err;
    }
  }
  return {
    status: 404,
    body: new StripeSimError(
      404,
      undefined,
      `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
    ).body(),
  };
}
