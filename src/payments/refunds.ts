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
  if (p === undefined) return applyInvoiceRefund(trx, paymentIntent, amountRefunded);
  const refundedAmount = Math.max(p.refunded_amount, Math.min(p.amount, amountRefunded));
  await takeBack(trx, 'payments', {
    paymentIntent,
    organizationId: p.organization_id,
    refundedAmount,
    target: clawbackCredits(p.credits, p.amount, refundedAmount),
    clawedBack: p.credits_clawed_back,
    reason: `refund: ${refundedAmount} of ${p.amount} refunded`,
  });
}

/**
 * Take back what a payment's refunds now call for beyond what was taken
 * (`target` − `clawedBack`), and record the refunded amount and the total
 * taken on the payment's row.
 */
async function takeBack(
  trx: Tx,
  table: 'payments' | 'invoice_payments',
  t: { paymentIntent: string; organizationId: string; refundedAmount: number; target: number; clawedBack: number; reason: string; allowancePeriod?: string },
): Promise<void> {
  const delta = t.target - t.clawedBack;
  if (delta > 0) {
    await credits.clawback(trx, {
      organizationId: t.organizationId,
      amount: delta,
      paymentRef: t.paymentIntent,
      reason: t.reason,
      idempotencyKey: `refund:${t.paymentIntent}:${t.target}`,
      actor: system,
      ...(t.allowancePeriod !== undefined && { allowancePeriod: t.allowancePeriod }),
    });
  }
  await sql`update ${sql.table(table)} set refunded_amount = ${t.refundedAmount}, credits_clawed_back = greatest(credits_clawed_back, ${t.target})
    where payment_intent = ${t.paymentIntent}`.execute(trx);
}

interface InvoicePaymentRow {
  organization_id: string;
  invoice_id: string;
  amount: number;
  allowance: number;
  allowance_period: string;
  refunded_amount: number;
  credits_clawed_back: number;
}

/**
 * A subscription invoice refunded (or its dispute lost): the same share of
 * the allowance it granted goes back. While its period is the account's
 * current one, the allowance is taken first (what is left of it), then
 * purchased credits, then debt, as for a pack. Once a renewal has ended
 * the period, its unused rest has already expired: at most what was used
 * of it is taken back (from purchased credits, then the current
 * allowance, then debt).
 */
async function applyInvoiceRefund(trx: Tx, paymentIntent: string, amountRefunded: number): Promise<void> {
  const { rows } = await sql<InvoicePaymentRow>`select * from invoice_payments where payment_intent = ${paymentIntent} for update`.execute(trx);
  const inv = rows[0];
  if (inv === undefined) return;
  const refundedAmount = Math.max(inv.refunded_amount, Math.min(inv.amount, amountRefunded));
  // under the account's lock: no renewal ends the period between this look and the clawback
  const { rows: acc } = await sql<{ allowance_period: string | null }>`
    select allowance_period from credit_accounts where organization_id = ${inv.organization_id} for update`.execute(trx);
  const current = acc[0]?.allowance_period === inv.allowance_period;
  let target = clawbackCredits(inv.allowance, inv.amount, refundedAmount);
  if (!current) target = Math.min(target, await allowanceUsed(trx, inv));
  await takeBack(trx, 'invoice_payments', {
    paymentIntent,
    organizationId: inv.organization_id,
    refundedAmount,
    target,
    clawedBack: inv.credits_clawed_back,
    reason: `refund of invoice ${inv.invoice_id}: ${refundedAmount} of ${inv.amount} refunded`,
    allowancePeriod: inv.allowance_period,
  });
}

/**
 * How much of an ended period's allowance was used (or otherwise taken):
 * what its renewal granted less what expired at the next renewal. Entries
 * of one renewal are written expiry first, and a renewal that found nothing
 * left writes no expiry. A reservation released after the renewal also
 * writes an `allowance_expiry` (its allowance part does not come back), but
 * with its reservation id: not this one. Credits still reserved when the
 * period ended count as used, even if one of them is released later (an
 * overstatement bounded by what was in flight at the renewal).
 */
async function allowanceUsed(trx: Tx, inv: InvoicePaymentRow): Promise<number> {
  const key = `invoice:${inv.invoice_id}`;
  const { rows } = await sql<{ granted: number; expired: number }>`
    select r.allowance_delta as granted, coalesce((
      select -e.allowance_delta from ledger_entries e
      where e.organization_id = r.organization_id and e.kind = 'allowance_expiry' and e.reservation_id is null and e.seq > r.seq
        and e.seq < coalesce((select min(n.seq) from ledger_entries n
          where n.organization_id = r.organization_id and n.kind = 'allowance_renewal' and n.seq > r.seq), 9223372036854775807)
      order by e.seq limit 1), 0)::bigint as expired
    from ledger_entries r
    where r.organization_id = ${inv.organization_id} and r.kind = 'allowance_renewal' and r.idempotency_key in (${key}, ${`${key}#2`})`.execute(trx);
  const r = rows[0];
  return r === undefined ? 0 : Math.max(0, r.granted - r.expired);
}
