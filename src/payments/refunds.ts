import { sql } from 'kysely';
import * as credits from '../credits/index.ts';
import type { Tx } from '../db/db.ts';
import { clawbackCredits } from './catalog.ts';

const system = { type: 'system' as const, id: 'billing' };

/**
 * Refunds add up: the highest cumulative refunded amount seen decides how
 * many of a pack's credits go back (a redelivered or late event takes
 * nothing twice). Used by `charge.refunded`, a lost dispute, and fulfilment
 * (a refund may come before the pack was granted).
 */
export async function applyRefund(trx: Tx, paymentIntent: string | null, amountRefunded: number): Promise<void> {
  if (paymentIntent === null) return;
  const { rows } = await sql<{ organization_id: string; amount: number; credits: number; refunded_amount: number; credits_clawed_back: number }>`
    select * from payments where payment_intent = ${paymentIntent} for update`.execute(trx);
  const p = rows[0];
  if (p === undefined) return;
  const refundedAmount = Math.max(p.refunded_amount, Math.min(p.amount, amountRefunded));
  const target = clawbackCredits(p.credits, p.amount, refundedAmount);
  const delta = target - p.credits_clawed_back;
  if (delta > 0) {
    await credits.clawback(trx, {
      organizationId: p.organization_id,
      amount: delta,
      paymentRef: paymentIntent,
      reason: `refund: ${refundedAmount} of ${p.amount} refunded`,
      idempotencyKey: `refund:${paymentIntent}:${target}`,
      actor: system,
    });
  }
  await sql`update payments set refunded_amount = ${refundedAmount}, credits_clawed_back = greatest(credits_clawed_back, ${target})
    where payment_intent = ${paymentIntent}`.execute(trx);
}
