import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import type { BillingDeps } from '../src/payments/billing.ts';
import { DEFAULT_CATALOG, handleStripeEvent } from '../src/payments/index.ts';
import type { Payments, SessionView } from '../src/payments/payments.ts';
import { silentLog } from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { insertOrg, storedAccount } from './helpers/orgs.ts';

/**
 * Interleavings of Stripe webhooks that the Stripe simulator cannot stage on
 * demand (a Stripe call failing at one exact point, a handler overtaken by
 * another's uncommitted renewal): the payments port is scripted per test,
 * the handlers, ledger and database are the real ones.
 */
let tdb: TestDatabase;
const system = { type: 'system' as const, id: 'test' };
beforeAll(async () => {
  tdb = await createTestDatabase({ poolSize: 20 });
});
afterAll(async () => {
  await tdb.close();
});

function scriptedPayments(script: Partial<Payments>): Payments {
  const unscripted = (name: string) => () => Promise.reject(new Error(`${name} is not scripted in this test`));
  return {
    createCheckout: unscripted('createCheckout'),
    getSession: unscripted('getSession'),
    getSubscription: unscripted('getSubscription'),
    refundedAmount: () => Promise.resolve(0),
    invoicePaymentIntent: () => Promise.resolve(null),
    getCharge: unscripted('getCharge'),
    changeSubscriptionPlan: unscripted('changeSubscriptionPlan'),
    verifyWebhook: () => undefined,
    ...script,
  };
}
const depsWith = (payments: Payments): BillingDeps => ({
  db: tdb.db,
  payments,
  catalog: DEFAULT_CATALOG,
  publicUrl: 'http://localhost',
  pastDueGraceMs: 1000,
  log: silentLog,
});
let n = 0;
const event = (type: string, object: Record<string, unknown>) => ({ id: `evt_race_${++n}`, type, created: Math.floor(Date.now() / 1000), object });

describe('a pack refunded while its fulfilment commits', () => {
  it('the refund is taken back when the webhook comes again, though the check after the commit failed', async () => {
    const org = await insertOrg(tdb.db);
    const sessionId = `cs_race_${n}`;
    await sql`insert into checkout_sessions (id, organization_id, kind, item, credits, amount, currency, status)
      values (${sessionId}, ${org}, 'pack', 'starter', 100, 300, 'eur', 'open')`.execute(tdb.db);
    const session: SessionView = { id: sessionId, status: 'complete', paymentStatus: 'paid', paymentIntent: 'pi_race_A', subscription: null, customer: 'cus_race_A', metadata: { organization_id: org }, amountTotal: 300 };
    let calls = 0;
    let refunded = 0;
    const deps: BillingDeps = depsWith(
      scriptedPayments({
        getSession: () => Promise.resolve(session),
        refundedAmount: async () => {
          calls++;
          if (calls === 1) {
            // read before the fulfilment: nothing refunded; right after, the buyer is refunded in full and
            // charge.refunded is handled, finding no payment recorded yet (a no-op)
            refunded = 300;
            await handleStripeEvent(deps, event('charge.refunded', { id: 'ch_race_A', payment_intent: 'pi_race_A', amount_refunded: 300 }));
            return 0;
          }
          if (calls === 2) throw new Error('Stripe timed out'); // the check after the commit
          return refunded;
        },
      }),
    );
    const completed = event('checkout.session.completed', { id: sessionId });
    await expect(handleStripeEvent(deps, completed)).rejects.toThrow('Stripe timed out'); // a 500: Stripe sends it again
    expect((await storedAccount(tdb.db, org)).purchased).toBe(100); // granted, the refund not yet taken
    expect(await handleStripeEvent(deps, completed)).toBe('processed');
    expect(await storedAccount(tdb.db, org)).toMatchObject({ purchased: 0, debt: 0 });
    const { rows } = await sql<{ refunded_amount: number; credits_clawed_back: number }>`
      select refunded_amount, credits_clawed_back from payments where payment_intent = 'pi_race_A'`.execute(tdb.db);
    expect(rows).toEqual([{ refunded_amount: 300, credits_clawed_back: 100 }]);
    // and once more: nothing is taken twice
    expect(await handleStripeEvent(deps, { ...completed, id: `${completed.id}_again` })).toBe('processed');
    expect(await storedAccount(tdb.db, org)).toMatchObject({ purchased: 0, debt: 0 });
  });
});

describe('invoice.paid of an older period, handled while a newer period renews', () => {
  it('does not replace the newer allowance: decided under the account lock', async () => {
    const org = await insertOrg(tdb.db);
    const sub = `sub_race_${n}`;
    const month = 2_592_000;
    const p1 = 1_700_000_000;
    const p2 = p1 + month;
    await credits.renewAllowance(tdb.db, { organizationId: org, amount: 100, period: `${sub}:${p1 - month}`, periodStart: new Date((p1 - month) * 1000), idempotencyKey: 'invoice:race_0', actor: system });
    const deps = depsWith(
      scriptedPayments({
        getSubscription: () => Promise.resolve({ id: sub, status: 'active', periodStart: new Date(p2 * 1000), periodEnd: null, metadata: { organization_id: org, item: 'ultra' } } as never),
      }),
    );
    const invoice = (id: string, start: number) => ({
      id,
      amount_paid: 0,
      parent: { subscription_details: { subscription: sub, metadata: { item: 'ultra' } } },
      lines: { data: [{ period: { start, end: start + month } }] },
    });
    // period 2's renewal, holding the account row, not committed yet
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    const p2Renewal = tdb.db.transaction().execute(async (trx) => {
      await credits.renewAllowance(trx, { organizationId: org, amount: 500, period: `${sub}:${p2}`, periodStart: new Date(p2 * 1000), idempotencyKey: 'invoice:race_2', actor: system });
      await held;
    });
    await new Promise((r) => setTimeout(r, 200));
    // period 1's invoice.paid (late, redelivered) is handled meanwhile: it waits for the lock
    const late = handleStripeEvent(deps, event('invoice.paid', invoice('in_race_1', p1)));
    await new Promise((r) => setTimeout(r, 500));
    release();
    await p2Renewal;
    await late;
    const { rows } = await sql<{ allowance_period: string; allowance_available: number }>`
      select allowance_period, allowance_available from credit_accounts where organization_id = ${org}`.execute(tdb.db);
    expect(rows).toEqual([{ allowance_period: `${sub}:${p2}`, allowance_available: 500 }]);
  });
});

describe('a dispute lost before the pack it disputes was fulfilled', () => {
  it('the fulfilment takes the whole pack back (a returning customer, so the dispute was recorded)', async () => {
    const org = await insertOrg(tdb.db);
    await sql`insert into billing_customers (organization_id, stripe_customer_id) values (${org}, 'cus_race_B')`.execute(tdb.db);
    const sessionId = `cs_race_dispute_${n}`;
    await sql`insert into checkout_sessions (id, organization_id, kind, item, credits, amount, currency, status)
      values (${sessionId}, ${org}, 'pack', 'starter', 100, 300, 'eur', 'open')`.execute(tdb.db);
    const session: SessionView = { id: sessionId, status: 'complete', paymentStatus: 'paid', paymentIntent: 'pi_race_B', subscription: null, customer: 'cus_race_B', metadata: { organization_id: org }, amountTotal: 300 };
    const deps = depsWith(
      scriptedPayments({
        getSession: () => Promise.resolve(session),
        getCharge: () => Promise.resolve({ customer: 'cus_race_B', paymentIntent: 'pi_race_B' }),
      }),
    );
    const dispute = { id: `du_race_${n}`, charge: 'ch_race_B', payment_intent: 'pi_race_B', status: 'lost' };
    await handleStripeEvent(deps, event('charge.dispute.created', { ...dispute, status: 'needs_response' }));
    await handleStripeEvent(deps, event('charge.dispute.closed', dispute));
    await handleStripeEvent(deps, event('checkout.session.completed', { id: sessionId }));
    expect(await storedAccount(tdb.db, org)).toMatchObject({ purchased: 0, debt: 0 });
    const { rows } = await sql<{ credits_clawed_back: number }>`select credits_clawed_back from payments where payment_intent = 'pi_race_B'`.execute(tdb.db);
    expect(rows).toEqual([{ credits_clawed_back: 100 }]);
  });
});
