/**
 * The Payments port (ARCHITECTURE §8): what Credence needs from Stripe.
 * The adapter (stripe.ts) uses the official SDK; local runs and tests point
 * it at the Stripe-compatible simulator, so the same code path runs.
 */
export interface CheckoutRequest {
  organizationId: string;
  kind: 'pack' | 'plan';
  item: string;
  name: string;
  amount: number;
  currency: string;
  credits: number;
  successUrl: string;
  cancelUrl: string;
  customerId?: string;
}

export interface SessionView {
  id: string;
  status: string;
  paymentStatus: string;
  paymentIntent: string | null;
  subscription: string | null;
  customer: string | null;
  metadata: Record<string, string>;
  amountTotal: number | null;
}

export interface SubscriptionView {
  id: string;
  status: string;
  periodStart: Date | null;
  periodEnd: Date | null;
  metadata: Record<string, string>;
}

export interface PaymentEvent {
  id: string;
  type: string;
  created: number;
  object: Record<string, unknown>;
}

export interface Payments {
  createCheckout(request: CheckoutRequest): Promise<{ id: string; url: string }>;
  getSession(id: string): Promise<SessionView>;
  getSubscription(id: string): Promise<SubscriptionView>;
  /** How much of a payment has been refunded so far (a refund can come before fulfilment). */
  refundedAmount(paymentIntent: string): Promise<number>;
  /** The payment intent that paid an invoice (its paid invoice payment), if any. */
  invoicePaymentIntent(invoiceId: string): Promise<string | null>;
  /** A charge's customer and payment intent (disputes on subscription charges carry only the charge). */
  getCharge(id: string): Promise<{ customer: string | null; paymentIntent: string | null }>;
  /**
   * Move the subscription to a plan: its item's price becomes the plan's
   * (billed from the next invoice, no proration) and its metadata names the
   * plan (the next renewal grants that plan's allowance).
   */
  changeSubscriptionPlan(id: string, plan: { id: string; name: string; amount: number; currency: string }): Promise<void>;
  /** The verified event, or undefined when the signature, timestamp or body do not check out. */
  verifyWebhook(rawBody: Buffer, signature: string | undefined): PaymentEvent | undefined;
}
