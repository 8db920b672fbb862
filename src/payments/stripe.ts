import Stripe from 'stripe';
import type { CheckoutRequest, PaymentEvent, Payments, SessionView, SubscriptionView } from './payments.ts';

export interface StripeOptions {
  secretKey: string;
  webhookSecret: string;
  /** e.g. http://127.0.0.1:3002 for the simulator; default api.stripe.com */
  apiUrl?: string;
  timeoutMs?: number;
}

const idOf = (v: unknown): string | null => (typeof v === 'string' ? v : v && typeof v === 'object' && 'id' in v ? String((v as { id: unknown }).id) : null);

/** Payments through the official Stripe SDK (host/port/protocol for the simulator). */
export function createStripePayments(options: StripeOptions): Payments {
  const url = options.apiUrl ? new URL(options.apiUrl) : undefined;
  const stripe = new Stripe(options.secretKey, {
    maxNetworkRetries: 2,
    timeout: options.timeoutMs ?? 20_000,
    ...(url && {
      host: url.hostname,
      port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
      protocol: url.protocol === 'https:' ? 'https' : 'http',
    }),
  });
  return {
    async createCheckout(r: CheckoutRequest) {
      const metadata = { organization_id: r.organizationId, kind: r.kind, item: r.item, credits: String(r.credits) };
      const session = await stripe.checkout.sessions.create({
        mode: r.kind === 'plan' ? 'subscription' : 'payment',
        line_items: [
          {
            quantity: 1,
            price_data: {
              currency: r.currency,
              unit_amount: r.amount,
              product_data: { name: r.name },
              ...(r.kind === 'plan' && { recurring: { interval: 'month' as const } }),
            },
          },
        ],
        success_url: r.successUrl,
        cancel_url: r.cancelUrl,
        client_reference_id: r.organizationId,
        metadata,
        ...(r.kind === 'plan' && { subscription_data: { metadata } }),
        ...(r.customerId && { customer: r.customerId }),
      });
      if (!session.url) throw new Error('Stripe returned a Checkout Session without a URL');
      return { id: session.id, url: session.url };
    },
    async getSession(id: string): Promise<SessionView> {
      const s = await stripe.checkout.sessions.retrieve(id);
      return {
        id: s.id,
        status: s.status ?? 'open',
        paymentStatus: s.payment_status,
        paymentIntent: idOf(s.payment_intent),
        subscription: idOf(s.subscription),
        customer: idOf(s.customer),
        metadata: (s.metadata ?? {}) as Record<string, string>,
        amountTotal: s.amount_total ?? null,
      };
    },
    async getSubscription(id: string): Promise<SubscriptionView> {
      const s = (await stripe.subscriptions.retrieve(id)) as unknown as Record<string, unknown> & { items?: { data?: Record<string, unknown>[] } };
      const item = s.items?.data?.[0] ?? {};
      const seconds = (v: unknown) => (typeof v === 'number' ? new Date(v * 1000) : null);
      return {
        id: String(s.id),
        status: String(s.status),
        // newer API versions keep the period on the item
        periodStart: seconds(s.current_period_start ?? item.current_period_start),
        periodEnd: seconds(s.current_period_end ?? item.current_period_end),
        metadata: (s.metadata ?? {}) as Record<string, string>,
      };
    },
    async refundedAmount(paymentIntent: string): Promise<number> {
      const intent = await stripe.paymentIntents.retrieve(paymentIntent);
      const charge = idOf(intent.latest_charge);
      if (charge === null) return 0;
      return (await stripe.charges.retrieve(charge)).amount_refunded ?? 0;
    },
    async invoicePaymentIntent(invoiceId: string) {
      // since API 2025-03-31 an invoice names no payment intent: its invoice payments do
      const payments = await stripe.invoicePayments.list({ invoice: invoiceId, status: 'paid', limit: 10 });
      for (const p of payments.data) {
        const intent = p.payment.type === 'payment_intent' ? idOf(p.payment.payment_intent ?? null) : null;
        if (intent !== null) return intent;
      }
      return null;
    },
    async getCharge(id: string) {
      const c = await stripe.charges.retrieve(id);
      return { customer: idOf(c.customer), paymentIntent: idOf(c.payment_intent) };
    },
    async changeSubscriptionPlan(id, plan) {
      const sub = await stripe.subscriptions.retrieve(id);
      const item = sub.items.data[0];
      if (item === undefined) throw new Error(`subscription ${id} has no item to reprice`);
      // one product per plan, under an id of ours: created once, found again after
      const product = `credence_plan_${plan.id}`;
      try {
        await stripe.products.create({ id: product, name: plan.name });
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'resource_already_exists') throw err;
      }
      await stripe.subscriptions.update(id, {
        items: [{ id: item.id, price_data: { currency: plan.currency, product, unit_amount: plan.amount, recurring: { interval: 'month' } } }],
        proration_behavior: 'none',
        metadata: { item: plan.id },
      });
    },
    verifyWebhook(rawBody: Buffer, signature: string | undefined): PaymentEvent | undefined {
      if (signature === undefined) return undefined;
      try {
        const e = stripe.webhooks.constructEvent(rawBody, signature, options.webhookSecret, 300);
        return { id: e.id, type: e.type, created: e.created, object: e.data.object as unknown as Record<string, unknown> };
      } catch {
        return undefined;
      }
    },
  };
}
