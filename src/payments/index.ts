export { type BillingDeps, changePlan, type FulfillResult, fulfillSession, startCheckout, syncSubscription } from './billing.ts';
export { type Catalog, clawbackCredits, DEFAULT_CATALOG, type Pack, type Plan } from './catalog.ts';
export { type EventOutcome, handleStripeEvent } from './events.ts';
export type { CheckoutRequest, PaymentEvent, Payments, SessionView, SubscriptionView } from './payments.ts';
export { createStripePayments, type StripeOptions } from './stripe.ts';
