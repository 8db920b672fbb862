import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MONTH, startPaymentsSimulator, type PaymentsSimulator, type StripeEvent } from '../src/payments/simulator/index.ts';

/** A local webhook endpoint: keeps every raw body and signature, answers with `status(n)`. */
interface Received {
  raw: string;
  signature: string;
  event: StripeEvent;
}

async function startReceiver(status: (n: number) => number = () => 200) {
  const received: Received[] = [];
  let calls = 0;
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const answer = status(++calls);
      if (answer < 300) received.push({ raw, signature: String(req.headers['stripe-signature']), event: JSON.parse(raw) as StripeEvent });
      res.writeHead(answer).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/stripe`,
    received,
    ofType: (type: string) => received.filter((r) => r.event.type === type).map((r) => r.event),
    close: () => new Promise<void>((r) => server.close(() => r()).closeAllConnections()),
  };
}

let sim: PaymentsSimulator;
let stripe: Stripe;
let receiver: Awaited<ReturnType<typeof startReceiver>>;

beforeAll(async () => {
  receiver = await startReceiver();
  sim = await startPaymentsSimulator({ seed: 11, webhookUrl: receiver.url, retry: { backoffMs: 5 } });
  stripe = new Stripe(sim.secretKey, { host: '127.0.0.1', port: sim.port, protocol: 'http' });
});

afterEach(async () => {
  await sim.flush();
  sim.setDelivery({ duplicateRate: 0, reorderWindowMs: 0 });
  sim.setWebhookUrl(receiver.url);
  receiver.received.length = 0;
});

afterAll(async () => {
  await sim.stop();
  await receiver.close();
});

const oneTime = (unit_amount: number, quantity = 1) => ({ price_data: { currency: 'eur', unit_amount, product_data: { name: '1,000 credits' } }, quantity });
const monthly = (unit_amount: number) => ({ price_data: { currency: 'eur', unit_amount, product_data: { name: 'Growth plan' }, recurring: { interval: 'month' as const } }, quantity: 1 });

async function paidCharge(amount: number): Promise<Stripe.Charge> {
  const session = await stripe.checkout.sessions.create({ mode: 'payment', line_items: [oneTime(amount)], metadata: { org: 'org_r' } });
  await sim.pay(session.id);
  const intent = await stripe.paymentIntents.retrieve((await stripe.checkout.sessions.retrieve(session.id)).payment_intent as string);
  return stripe.charges.retrieve(intent.latest_charge as string);
}

describe('Checkout in payment mode, through the official SDK and the hosted page', () => {
  it('pays, redirects to success_url, and posts a checkout.session.completed that constructEvent accepts', async () => {
    const session = await stripe.checkout.sessions.create({
      mode: 'payment',
      line_items: [oneTime(2_500, 2)],
      success_url: 'https://shop.example/ok?session={CHECKOUT_SESSION_ID}',
      cancel_url: 'https://shop.example/cancel',
      client_reference_id: 'org_1',
      metadata: { org: 'org_1', purchase: 'pur_1' },
      customer_email: 'ada@example.com',
    });
    expect(session.id).toMatch(/^cs_test_[0-9A-Za-z]{58}$/);
    expect(session).toMatchObject({ object: 'checkout.session', livemode: false, status: 'open', payment_status: 'unpaid', amount_total: 5_000, currency: 'eur', url: `${sim.url}/pay/${session.id}` });

    const page = await (await fetch(session.url!)).text();
    expect(page).toContain('1,000 credits × 2');
    const action = /<form method="post" action="([^"]+\/pay)">/.exec(page)?.[1];
    expect(action).toBe(`/pay/${session.id}/pay`);
    const paid = await fetch(`${sim.url}${action}`, { method: 'POST', body: new URLSearchParams({ pay: '1' }), redirect: 'manual' });
    expect(paid.status).toBe(303);
    expect(paid.headers.get('location')).toBe(`https://shop.example/ok?session=${session.id}`);

    await sim.flush();
    const [got] = receiver.received;
    expect(receiver.received).toHaveLength(1);
    const event = stripe.webhooks.constructEvent(got!.raw, got!.signature, sim.webhookSecret);
    expect(event).toMatchObject({ object: 'event', type: 'checkout.session.completed', livemode: false, api_version: expect.any(String) });
    const completed = event.data.object as Stripe.Checkout.Session;
    expect(completed).toMatchObject({ id: session.id, status: 'complete', payment_status: 'paid', amount_total: 5_000, client_reference_id: 'org_1', metadata: { org: 'org_1', purchase: 'pur_1' } });
    expect(completed.payment_intent).toMatch(/^pi_/);
    expect(completed.customer).toMatch(/^cus_/);

    expect(() => stripe.webhooks.constructEvent(got!.raw.replace('org_1', 'org_2'), got!.signature, sim.webhookSecret)).toThrow(Stripe.errors.StripeSignatureVerificationError);
    expect(() => stripe.webhooks.constructEvent(got!.raw, got!.signature, 'whsec_another')).toThrow(Stripe.errors.StripeSignatureVerificationError);

    const intent = await stripe.paymentIntents.retrieve(completed.payment_intent as string);
    const charge = await stripe.charges.retrieve(intent.latest_charge as string);
    expect(charge).toMatchObject({ object: 'charge', amount: 5_000, currency: 'eur', payment_intent: intent.id, amount_refunded: 0, refunded: false, metadata: { org: 'org_1', purchase: 'pur_1' } });
    expect((await stripe.customers.retrieve(completed.customer as string)) as Stripe.Customer).toMatchObject({ email: 'ada@example.com' });
    expect(await (await fetch(session.url!)).text()).toContain('is complete');
    await expect(sim.pay(session.id)).rejects.toThrow(/not open/);
  });

  it('expires a declined session and sends the buyer to cancel_url', async () => {
    const session = await stripe.checkout.sessions.create({ mode: 'payment', line_items: [oneTime(100)], cancel_url: 'https://shop.example/cancel' });
    const declined = await fetch(`${sim.url}/pay/${session.id}/decline`, { method: 'POST', redirect: 'manual' });
    expect(declined.headers.get('location')).toBe('https://shop.example/cancel');
    expect((await stripe.checkout.sessions.retrieve(session.id)).status).toBe('expired');
    await sim.flush();
    expect(receiver.received.map((r) => r.event.type)).toEqual(['checkout.session.expired']);
  });

  it('settles a delayed payment later, with async_payment_succeeded', async () => {
    const session = await stripe.checkout.sessions.create({ mode: 'payment', line_items: [oneTime(900)], metadata: { org: 'org_d' } });
    await sim.pay(session.id, { delayed: true });
    await sim.flush();
    expect(receiver.ofType('checkout.session.completed')[0]!.data.object).toMatchObject({ status: 'complete', payment_status: 'unpaid' });
    const pending = await stripe.checkout.sessions.retrieve(session.id);
    expect((await stripe.paymentIntents.retrieve(pending.payment_intent as string)).status).toBe('processing');

    await sim.settleDelayed(session.id);
    await sim.flush();
    expect(receiver.ofType('checkout.session.async_payment_succeeded')[0]!.data.object).toMatchObject({ id: session.id, payment_status: 'paid' });
    const intent = await stripe.paymentIntents.retrieve(pending.payment_intent as string);
    expect(intent).toMatchObject({ status: 'succeeded', amount_received: 900 });
    expect((await stripe.charges.retrieve(intent.latest_charge as string)).metadata).toEqual({ org: 'org_d' });
    await expect(sim.settleDelayed(session.id)).rejects.toThrow(/no payment awaiting/);
  });
});

describe('subscriptions on the simulated clock', () => {
  it('starts with a paid invoice, renews each month, fails a renewal on request, and cancels', async () => {
    const session = await stripe.checkout.sessions.create({ mode: 'subscription', line_items: [monthly(4_900)], metadata: { org: 'org_s', plan: 'growth' } });
    await sim.pay(session.id);
    await sim.flush();
    expect(receiver.received.map((r) => r.event.type)).toEqual(['customer.subscription.created', 'invoice.paid', 'checkout.session.completed']);
    const done = await stripe.checkout.sessions.retrieve(session.id);
    const sub = await stripe.subscriptions.retrieve(done.subscription as string);
    expect(sub).toMatchObject({ object: 'subscription', status: 'active', customer: done.customer, metadata: { org: 'org_s', plan: 'growth' } });
    expect(sub.items.data[0]!.price).toMatchObject({ unit_amount: 4_900, currency: 'eur', recurring: { interval: 'month' } });
    const period = sub as unknown as { current_period_start: number; current_period_end: number };
    expect(period.current_period_end - period.current_period_start).toBe(MONTH);
    expect(sub.items.data[0]!.current_period_end).toBe(period.current_period_end);

    const first = receiver.ofType('invoice.paid')[0]!.data.object as unknown as Record<string, unknown> & Stripe.Invoice;
    expect(first).toMatchObject({ subscription: sub.id, amount_paid: 4_900, status: 'paid', billing_reason: 'subscription_create' });
    expect(first.lines.data[0]!.period).toEqual({ start: period.current_period_start, end: period.current_period_end });
    expect(first.charge).toMatch(/^ch_/);
    // since API 2025-03-31 the invoice's payment intent is found through its invoice payments
    const payments = await stripe.invoicePayments.list({ invoice: first.id!, status: 'paid' });
    expect(payments.data).toEqual([
      expect.objectContaining({ object: 'invoice_payment', invoice: first.id, status: 'paid', amount_paid: 4_900, payment: { type: 'payment_intent', payment_intent: first.payment_intent } }),
    ]);
    expect((await stripe.invoicePayments.list({ invoice: first.id!, status: 'open' })).data).toEqual([]);
    await expect(stripe.invoicePayments.list({ invoice: 'in_nope' })).rejects.toMatchObject({ statusCode: 400, param: 'invoice' });
    expect((await stripe.invoices.retrieve(first.id!)).parent?.subscription_details?.metadata).toEqual({ org: 'org_s', plan: 'growth' });

    await sim.advanceClock();
    await sim.flush();
    const second = receiver.ofType('invoice.paid')[1]!.data.object as unknown as Stripe.Invoice;
    expect(second.id).not.toBe(first.id);
    expect(second).toMatchObject({ billing_reason: 'subscription_cycle', amount_paid: 4_900 });
    expect(second.lines.data[0]!.period).toEqual({ start: period.current_period_end, end: period.current_period_end + MONTH });

    sim.failNextRenewal(sub.id);
    await sim.advanceClock();
    await sim.flush();
    expect(receiver.ofType('invoice.payment_failed')[0]!.data.object).toMatchObject({ subscription: sub.id, status: 'open', amount_paid: 0, amount_remaining: 4_900 });
    const pastDue = receiver.ofType('customer.subscription.updated').at(-1)!;
    expect(pastDue.data).toMatchObject({ object: { status: 'past_due' }, previous_attributes: { status: 'active' } });
    expect((await stripe.subscriptions.retrieve(sub.id)).status).toBe('past_due');

    await sim.advanceClock(); // the next renewal is paid: active again
    expect((await stripe.subscriptions.retrieve(sub.id)).status).toBe('active');

    await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true, metadata: { plan: '' } });
    await sim.advanceClock();
    await sim.flush();
    const deleted = receiver.ofType('customer.subscription.deleted');
    expect(deleted.map((e) => e.data.object)).toEqual([expect.objectContaining({ id: sub.id, status: 'canceled', metadata: { org: 'org_s' } })]);
    await expect(stripe.subscriptions.cancel(sub.id)).rejects.toMatchObject({ statusCode: 400 });
  });

  it("changes an item's price without proration: the next renewal bills it; a refused change changes nothing", async () => {
    const session = await stripe.checkout.sessions.create({ mode: 'subscription', line_items: [monthly(900)] });
    await sim.pay(session.id);
    const sub = await stripe.subscriptions.retrieve((await stripe.checkout.sessions.retrieve(session.id)).subscription as string);
    const item = sub.items.data[0]!;
    const product = await stripe.products.create({ id: 'plan_ultra', name: 'Ultra' });
    expect(product).toMatchObject({ id: 'plan_ultra', object: 'product', name: 'Ultra' });
    await expect(stripe.products.create({ id: 'plan_ultra', name: 'Ultra' })).rejects.toMatchObject({ statusCode: 400, code: 'resource_already_exists' });
    const priceData = { currency: 'eur', product: product.id, unit_amount: 2_900, recurring: { interval: 'month' as const } };

    // Stripe would prorate by default; the simulator cannot, so it refuses rather than bill differently
    await expect(stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price_data: priceData }] })).rejects.toMatchObject({ statusCode: 400, param: 'proration_behavior' });
    await expect(
      stripe.subscriptions.update(sub.id, { items: [{ id: 'si_nope', price_data: priceData }], proration_behavior: 'none' }),
    ).rejects.toMatchObject({ statusCode: 400, param: 'items[0][id]' });
    await expect(
      stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price_data: { ...priceData, product: 'prod_nope' } }], proration_behavior: 'none' }),
    ).rejects.toMatchObject({ statusCode: 400, param: 'items[0][price_data][product]' });
    await expect(
      stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price_data: { ...priceData, currency: 'usd' } }], proration_behavior: 'none' }),
    ).rejects.toMatchObject({ statusCode: 400, param: 'items[0][price_data][currency]' });
    expect((await stripe.subscriptions.retrieve(sub.id)).items.data[0]!.price.unit_amount).toBe(900);

    const updated = await stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price_data: priceData }], proration_behavior: 'none' });
    expect(updated.items.data[0]!.price).toMatchObject({ unit_amount: 2_900, product: 'plan_ultra', recurring: { interval: 'month' } });
    await sim.advanceClock();
    await sim.flush();
    const renewal = receiver
      .ofType('invoice.paid')
      .map((e) => e.data.object as unknown as Stripe.Invoice & { subscription: string })
      .filter((i) => i.subscription === sub.id)
      .at(-1)!;
    expect(renewal).toMatchObject({ billing_reason: 'subscription_cycle', amount_paid: 2_900 });
    expect(renewal.lines.data[0]!.description).toContain('Ultra');
    await stripe.subscriptions.cancel(sub.id); // later tests move the clock and count events
    await sim.flush();
  });

  it('cancels now through the SDK and through the simulator', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const s = await stripe.checkout.sessions.create({ mode: 'subscription', line_items: [monthly(1_000)] });
      await sim.pay(s.id);
      ids.push((await stripe.checkout.sessions.retrieve(s.id)).subscription as string);
    }
    expect((await stripe.subscriptions.cancel(ids[0]!)).status).toBe('canceled');
    await sim.cancelSubscription(ids[1]!);
    await sim.flush();
    expect(receiver.ofType('customer.subscription.deleted').map((e) => e.data.object.id)).toEqual(ids);
  });
});

describe('refunds and disputes', () => {
  it('adds partial refunds up on the charge, and refuses more than was paid', async () => {
    const charge = await paidCharge(1_000);
    await sim.refund(charge.id, 300);
    const refund = await stripe.refunds.create({ payment_intent: charge.payment_intent as string, amount: 200 });
    expect(refund).toMatchObject({ object: 'refund', amount: 200, charge: charge.id, status: 'succeeded' });
    await sim.flush();
    expect(receiver.ofType('charge.refunded').map((e) => e.data.object)).toEqual([
      expect.objectContaining({ id: charge.id, amount_refunded: 300, refunded: false, metadata: { org: 'org_r' } }),
      expect.objectContaining({ id: charge.id, amount_refunded: 500, refunded: false }),
    ]);
    await expect(stripe.refunds.create({ charge: charge.id, amount: 501 })).rejects.toMatchObject({ statusCode: 400, code: 'amount_too_large', param: 'amount' });
    await stripe.refunds.create({ charge: charge.id });
    expect(await stripe.charges.retrieve(charge.id)).toMatchObject({ amount_refunded: 1_000, refunded: true });
  });

  it('opens a dispute and closes it won or lost', async () => {
    const charge = await paidCharge(700);
    const disputeId = await sim.dispute(charge.id);
    expect(disputeId).toMatch(/^du_/);
    await sim.closeDispute(disputeId, 'lost');
    await sim.flush();
    expect(receiver.ofType('charge.dispute.created')[0]!.data.object).toMatchObject({ id: disputeId, charge: charge.id, amount: 700, status: 'needs_response' });
    expect(receiver.ofType('charge.dispute.closed')[0]!.data.object).toMatchObject({ id: disputeId, status: 'lost' });
    expect((await stripe.disputes.retrieve(disputeId)).status).toBe('lost');
    await expect(sim.closeDispute(disputeId, 'won')).rejects.toThrow(/already closed/);
  });
});

describe('webhook delivery faults', () => {
  it('delivers a duplicate with the same event id, both signed', async () => {
    sim.setDelivery({ duplicateRate: 1 });
    await paidCharge(100);
    await sim.flush();
    expect(receiver.received).toHaveLength(2);
    expect(receiver.received[0]!.event.id).toBe(receiver.received[1]!.event.id);
    for (const r of receiver.received) expect(stripe.webhooks.constructEvent(r.raw, r.signature, sim.webhookSecret).id).toBe(r.event.id);
  });

  it('delivers out of order within the reorder window', async () => {
    const charge = await paidCharge(100);
    await sim.flush();
    receiver.received.length = 0;
    sim.setDelivery({ reorderWindowMs: 200 });
    for (let i = 0; i < 20; i++) await sim.refund(charge.id, 1);
    await sim.flush();
    const amounts = receiver.received.map((r) => (r.event.data.object as unknown as Stripe.Charge).amount_refunded);
    expect([...amounts].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(amounts).not.toEqual([...amounts].sort((a, b) => a - b));
  });

  it('retries a failing endpoint, gives up on a dead one, and records every attempt', async () => {
    const flaky = await startReceiver((n) => (n <= 2 ? 500 : 200));
    sim.setWebhookUrl(flaky.url);
    await paidCharge(100);
    await sim.flush();
    const id = flaky.received[0]!.event.id;
    expect(sim.deliveries().filter((d) => d.eventId === id).map((d) => d.status)).toEqual([500, 500, 200]);
    await flaky.close();
    await paidCharge(100); // nobody listens there now
    await sim.flush();
    const last = sim.events().at(-1)!;
    expect(sim.deliveries().filter((d) => d.eventId === last.id).map((d) => d.status)).toEqual([null, null, null]);
  });
});

describe('API errors, idempotency and the admin API', () => {
  it('answers 401 without the secret key', async () => {
    const wrong = new Stripe('sk_test_wrong', { host: '127.0.0.1', port: sim.port, protocol: 'http' });
    await expect(wrong.customers.create({ email: 'x@example.com' })).rejects.toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    const res = await fetch(`${sim.url}/v1/customers`, { method: 'POST' });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: { type: 'invalid_request_error', message: expect.stringContaining('API key') } });
  });

  it('answers Stripe-shaped 400s and 404s that name the parameter', async () => {
    const noMode = await stripe.checkout.sessions.create({ line_items: [oneTime(100)] }).catch((e: unknown) => e);
    expect(noMode).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(noMode).toMatchObject({ statusCode: 400, code: 'parameter_missing', param: 'mode' });
    const noAmount = { price_data: { currency: 'eur', product_data: { name: 'x' } }, quantity: 1 };
    await expect(stripe.checkout.sessions.create({ mode: 'payment', line_items: [noAmount] })).rejects.toMatchObject({ code: 'parameter_missing', param: 'line_items[0][price_data][unit_amount]' });
    await expect(stripe.checkout.sessions.create({ mode: 'payment', line_items: [monthly(100)] })).rejects.toMatchObject({ code: 'parameter_invalid' });
    await expect(stripe.checkout.sessions.create({ mode: 'payment', line_items: [oneTime(1)], ui_mode: 'embedded_page' })).rejects.toMatchObject({ code: 'parameter_unknown', param: 'ui_mode' });
    await expect(stripe.subscriptions.retrieve('sub_missing')).rejects.toMatchObject({ statusCode: 404, code: 'resource_missing', param: 'id' });
    const raw = await fetch(`${sim.url}/v1/checkout/sessions`, { method: 'POST', headers: { authorization: `Bearer ${sim.secretKey}` }, body: new URLSearchParams({ mode: 'payment' }) });
    expect(raw.status).toBe(400);
    expect(await raw.json()).toEqual({ error: { type: 'invalid_request_error', code: 'parameter_missing', param: 'line_items', message: 'Missing required param: line_items.', doc_url: expect.any(String) } });
  });

  it('replays an idempotent request and refuses the key with other parameters', async () => {
    const first = await stripe.customers.create({ email: 'a@example.com' }, { idempotencyKey: 'key-1' });
    const again = await stripe.customers.create({ email: 'a@example.com' }, { idempotencyKey: 'key-1' });
    expect(again.id).toBe(first.id);
    await expect(stripe.customers.create({ email: 'b@example.com' }, { idempotencyKey: 'key-1' })).rejects.toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
  });

  it('drives everything over /_sim JSON endpoints', async () => {
    const post = (path: string, body?: unknown) => fetch(`${sim.url}/_sim${path}`, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) });
    const put = (path: string, body: unknown) => fetch(`${sim.url}/_sim${path}`, { method: 'PUT', body: JSON.stringify(body) });
    expect(await (await put('/delivery', { duplicateRate: 2 })).json()).toMatchObject({ error: { code: 'parameter_invalid' } });
    expect(await (await put('/webhook-url', { url: receiver.url })).json()).toEqual({ url: receiver.url });
    const session = await stripe.checkout.sessions.create({ mode: 'payment', line_items: [oneTime(400)] });
    expect(await (await post(`/sessions/${session.id}/pay`, { delayed: true })).json()).toMatchObject({ payment_status: 'unpaid' });
    expect(await (await post(`/sessions/${session.id}/settle`)).json()).toMatchObject({ payment_status: 'paid' });
    const paid = await stripe.checkout.sessions.retrieve(session.id);
    const chargeId = (await stripe.paymentIntents.retrieve(paid.payment_intent as string)).latest_charge as string;
    expect(await (await post(`/charges/${chargeId}/refund`, { amount: 150 })).json()).toMatchObject({ amount: 150 });
    const dispute = (await (await post(`/charges/${chargeId}/dispute`)).json()) as { id: string };
    expect(await (await post(`/disputes/${dispute.id}/close`, { outcome: 'won' })).json()).toMatchObject({ status: 'won' });
    expect((await post('/sessions/cs_test_nope/pay')).status).toBe(404);
    const before = sim.now();
    expect(((await (await post('/clock/advance')).json()) as { now: number }).now).toBeGreaterThanOrEqual(before + MONTH);
    expect((await post('/flush')).status).toBe(204);
    const events = (await (await fetch(`${sim.url}/_sim/events`)).json()) as StripeEvent[];
    expect(events.slice(-5).map((e) => e.type)).toEqual(['checkout.session.completed', 'checkout.session.async_payment_succeeded', 'charge.refunded', 'charge.dispute.created', 'charge.dispute.closed']);
    expect(receiver.received.map((r) => r.event.id)).toEqual(events.slice(-5).map((e) => e.id));
  });

  it('makes the same ids from the same seed', async () => {
    const ids = async () => {
      const s = await startPaymentsSimulator({ seed: 99 });
      const c = new Stripe(s.secretKey, { host: '127.0.0.1', port: s.port, protocol: 'http' });
      const session = await c.checkout.sessions.create({ mode: 'payment', line_items: [oneTime(100)] });
      await s.pay(session.id);
      await s.stop();
      return [session.id, ...s.events().map((e) => e.id)];
    };
    expect(await ids()).toEqual(await ids());
  });
});
