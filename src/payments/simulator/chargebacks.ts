/**
 * Money going back: refunds (partial or full, `amount_refunded` adding up
 * on the charge) and disputes that open and then close won or lost.
 */
import {
  type Charge,
  type Dispute,
  invalid,
  type Metadata,
  must,
  type Refund,
  type StripeObject,
  StripeSimError,
} from './resources.ts';
import type { Store } from './world.ts';

interface Deps {
  id: (prefix: string, length?: number) => string;
  now: () => number;
  store: Store;
  emit: (type: string, object: StripeObject, previous?: Record<string, unknown>) => void;
}

export interface RefundInput {
  charge?: string;
  paymentIntent?: string;
  /** Minor units; the rest of the charge when left out. */
  amount?: number;
  reason?: string;
  metadata?: Metadata;
}

export function createChargebacks({ id, now, store, emit }: Deps) {
  function chargeOf(input: RefundInput): Charge {
    if (input.charge !== undefined) return must(store.charges, input.charge, 'charge', 'charge');
    if (input.paymentIntent === undefined) throw new StripeSimError(400, 'parameter_missing', 'One of `charge` or `payment_intent` is required.', 'charge');
    const intent = must(store.intents, input.paymentIntent, 'payment_intent', 'payment_intent');
    if (intent.latest_charge === null)
      throw new StripeSimError(400, 'payment_intent_unexpected_state', `PaymentIntent ${intent.id} has no successful charge to refund.`, 'payment_intent');
    return must(store.charges, intent.latest_charge, 'charge', 'payment_intent');
  }

  function refund(input: RefundInput): Refund {
    const charge = chargeOf(input);
    const left = charge.amount - charge.amount_refunded;
    if (left === 0) throw new StripeSimError(400, 'charge_already_refunded', `Charge ${charge.id} has already been refunded.`, 'charge');
    if (charge.disputed && [...store.disputes.values()].some((d) => d.charge === charge.id && d.status === 'needs_response'))
      throw new StripeSimError(400, 'charge_disputed', `Charge ${charge.id} has been charged back; a disputed charge cannot be refunded.`, 'charge');
    const amount = input.amount ?? left;
    if (!Number.isInteger(amount) || amount < 1) throw invalid('amount', 'Invalid positive integer');
    if (amount > left)
      throw new StripeSimError(
        400,
        'amount_too_large',
        `Refund amount (${amount}) is greater than unrefunded amount on charge (${left})`,
        'amount',
      );
    const r: Refund = {
      id: id('re'),
      object: 'refund',
      livemode: false,
      created: now(),
      amount,
      charge: charge.id,
      payment_intent: charge.payment_intent,
      currency: charge.currency,
      status: 'succeeded',
      reason: input.reason ?? null,
      metadata: { ...input.metadata },
    };
    store.refunds.set(r.id, r);
    const previous = { amount_refunded: charge.amount_refunded, refunded: charge.refunded };
    charge.amount_refunded += amount;
    charge.refunded = charge.amount_refunded === charge.amount;
    charge.refunds.data.unshift(r);
    charge.refunds.total_count = charge.refunds.data.length;
    emit('charge.refunded', charge, previous);
    return r;
  }

  function dispute(chargeId: string): Dispute {
    const charge = must(store.charges, chargeId, 'charge', 'charge');
    if (charge.disputed) throw new StripeSimError(400, undefined, `Charge ${charge.id} is already disputed.`, 'charge');
    const d: Dispute = {
      id: id('du'),
      object: 'dispute',
      livemode: false,
      created: now(),
      amount: charge.amount,
      currency: charge.currency,
      charge: charge.id,
      payment_intent: charge.payment_intent,
      reason: 'fraudulent',
      status: 'needs_response',
      metadata: {},
    };
    store.disputes.set(d.id, d);
    charge.disputed = true;
    emit('charge.dispute.created', d);
    return d;
  }

  function closeDispute(disputeId: string, outcome: 'won' | 'lost'): Dispute {
    const d = must(store.disputes, disputeId, 'dispute');
    if (outcome !== 'won' && outcome !== 'lost') throw invalid('outcome', "outcome must be 'won' or 'lost'");
    if (d.status !== 'needs_response') throw new StripeSimError(400, undefined, `Dispute ${d.id} is already closed (${d.status}).`, 'dispute');
    const previous = { status: d.status };
    d.status = outcome;
    emit('charge.dispute.closed', d, previous);
    return d;
  }

  return { refund, dispute, closeDispute };
}
