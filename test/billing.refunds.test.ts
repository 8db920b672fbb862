import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { signatureHeader } from '../src/payments/simulator/index.ts';
import { bearer } from './helpers/app.ts';
import { storedAccount } from './helpers/orgs.ts';
import { eventually, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * A subscription invoice refunded, or its charge's dispute lost, takes back
 * the same share of the allowance the invoice granted (issue 7's refunds,
 * for plans as for packs): from what is left of that allowance while its
 * period lasts; once a renewal ended the period, at most what was used of
 * it, from purchased credits. Through the official SDK and the Stripe
 * simulator over real HTTP.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline({ payments: true, withWorker: false });
});
afterAll(async () => {
  await p?.close();
});

const sim = () => p.payments!;
const account = () => storedAccount(p.tdb.db, p.tenant.organizationId);

async function checkout(kind: 'pack' | 'plan', item: string): Promise<void> {
  const res = await p.app.inject({ method: 'POST', url: '/v1/billing/checkout', headers: bearer(p.tenant.orgKey), payload: { kind, item } });
  expect(res.statusCode, res.body).toBe(201);
  await sim().pay((res.json() as { session_id: string }).session_id);
  await sim().flush();
}

/** The charges of the subscription's paid invoices, oldest first. */
function invoiceCharges(): { invoice: string; charge: string; amount: number }[] {
  return sim()
    .events()
    .filter((e) => e.type === 'invoice.paid')
    .map((e) => e.data.object as unknown as { id: string; charge: string | null; amount_paid: number })
    .filter((i) => i.charge !== null)
    .map((i) => ({ invoice: i.id, charge: i.charge!, amount: i.amount_paid }));
}

/** An event posted to our webhook again, signed now as Stripe signs: the HTTP status. */
async function postSigned(event: unknown): Promise<number> {
  const raw = JSON.stringify(event);
  const res = await fetch(`${p.apiUrl}/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': signatureHeader(sim().webhookSecret, raw, Math.floor(Date.now() / 1000)) },
    body: raw,
  });
  return res.status;
}

async function invoicePayment(invoice: string) {
  const { rows } = await sql<{ refunded_amount: number; credits_clawed_back: number; allowance: number }>`
    select refunded_amount, credits_clawed_back, allowance from invoice_payments where invoice_id = ${invoice}`.execute(p.tdb.db);
  return rows[0];
}

describe('refunds of subscription invoices', () => {
  it('take back the refunded share of the allowance: its rest while the period lasts, at most what was used after it', async () => {
    await checkout('pack', 'standard'); // 500 purchased credits
    await checkout('plan', 'pro'); // 100 credits a month for €9.00
    await eventually(async () => ((await account()).allowance === 100 ? true : undefined), 10_000, 'allowance granted');
    const [first] = invoiceCharges();
    expect(first).toBeDefined();
    expect(await invoicePayment(first!.invoice)).toEqual({ refunded_amount: 0, credits_clawed_back: 0, allowance: 100 });

    // 30 of the allowance go to messages
    await credits.reserve(p.tdb.db, {
      organizationId: p.tenant.organizationId,
      items: [{ messageId: 'refund-probe', amount: 30 }],
      idempotencyKey: 'refund-probe',
      actor: { type: 'system', id: 'test' },
    });
    expect(await account()).toMatchObject({ allowance: 70, purchased: 500, reservedAllowance: 30, debt: 0 });

    // half the invoice refunded: half the allowance goes back, from the allowance itself
    await sim().refund(first!.charge, first!.amount / 2);
    await sim().flush();
    await eventually(async () => ((await account()).allowance === 20 ? true : undefined), 10_000, 'the first clawback');
    expect(await account()).toMatchObject({ allowance: 20, purchased: 500, reservedAllowance: 30, debt: 0 });
    expect(await invoicePayment(first!.invoice)).toMatchObject({ refunded_amount: first!.amount / 2, credits_clawed_back: 50 });

    // the same refund event again changes nothing
    const event = sim()
      .events()
      .filter((e) => e.type === 'charge.refunded' && (e.data.object as unknown as { id: string }).id === first!.charge)
      .at(-1)!;
    expect(await postSigned(event)).toBe(200);
    expect(await account()).toMatchObject({ allowance: 20, purchased: 500, debt: 0 });

    // a renewal ends the period: its last 20 expire, a new 100 arrive
    await sim().advanceClock();
    await sim().flush();
    await eventually(async () => (invoiceCharges().length === 2 && (await account()).allowance === 100 ? true : undefined), 10_000, 'renewed');
    const second = invoiceCharges()[1]!;

    // the rest of the first invoice refunded: 100 % would be 100 credits, but
    // 20 of them expired unused; the other 30 owed come from purchased credits
    await sim().refund(first!.charge);
    await sim().flush();
    await eventually(async () => ((await account()).purchased === 470 ? true : undefined), 10_000, 'the second clawback');
    expect(await account()).toMatchObject({ allowance: 100, purchased: 470, debt: 0 });
    expect(await invoicePayment(first!.invoice)).toEqual({ refunded_amount: first!.amount, credits_clawed_back: 80, allowance: 100 });

    // the current invoice's dispute lost: its whole allowance goes back, the allowance first
    const dispute = await sim().dispute(second.charge);
    await sim().flush();
    await sim().closeDispute(dispute, 'lost');
    await sim().flush();
    await eventually(async () => ((await invoicePayment(second.invoice))?.credits_clawed_back === 100 ? true : undefined), 10_000, 'the dispute clawback');
    expect(await account()).toMatchObject({ allowance: 0, purchased: 470, debt: 0 });

    const { rows: entries } = await sql<{ kind: string; allowance_delta: number; purchased_delta: number; payment_ref: string }>`
      select kind, allowance_delta, purchased_delta, payment_ref from ledger_entries
      where organization_id = ${p.tenant.organizationId} and kind = 'clawback' order by seq`.execute(p.tdb.db);
    expect(entries.map((e) => [e.allowance_delta, e.purchased_delta])).toEqual([
      [-50, 0],
      [0, -30],
      [-100, 0],
    ]);
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 60_000);

  it('a refund made before its invoice.paid was handled is taken into account when it is', async () => {
    const before = await account();
    sim().setWebhookUrl(undefined);
    await sim().advanceClock(); // a renewal whose events are not delivered yet
    const paid = sim()
      .events()
      .filter((e) => e.type === 'invoice.paid')
      .at(-1)!;
    const invoice = paid.data.object as unknown as { id: string; charge: string; amount_paid: number };
    await sim().refund(invoice.charge, Math.round(invoice.amount_paid / 4)); // 25 %, refunded before we knew of the invoice
    sim().setWebhookUrl(`${p.apiUrl}/webhooks/stripe`);
    expect(await postSigned(paid)).toBe(200);
    expect(await invoicePayment(invoice.id)).toEqual({ refunded_amount: Math.round(invoice.amount_paid / 4), credits_clawed_back: 25, allowance: 100 });
    expect(await account()).toMatchObject({ allowance: 75, purchased: before.purchased, debt: 0 });
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 30_000);

  it("what a period left unused is what its renewal expired, not an older reservation's release", async () => {
    const actor = { type: 'system' as const, id: 'test' };
    const org = p.tenant.organizationId;
    const reserveFromAllowance = async (key: string, amount: number) =>
      (await credits.reserve(p.tdb.db, { organizationId: org, items: [{ messageId: key, amount }], idempotencyKey: key, actor })).reserved[0]!.reservation_id;
    // in flight across a renewal: its allowance part will expire when it is released
    const inFlight = await reserveFromAllowance('across-renewal', 10);
    const paidBefore = invoiceCharges().length;
    await sim().advanceClock();
    await sim().flush();
    await eventually(async () => (invoiceCharges().length === paidBefore + 1 && (await account()).allowance === 100 ? true : undefined), 10_000, 'renewed');
    const period = invoiceCharges().at(-1)!;
    // during this period: the older reservation released (an expiry entry of 10), 40 spent
    await credits.release(p.tdb.db, { organizationId: org, reservationIds: [inFlight], idempotencyKey: 'release-across', actor });
    await reserveFromAllowance('this-period', 40);
    expect((await account()).allowance).toBe(60);
    await sim().advanceClock(); // 60 of this period expire
    await sim().flush();
    await eventually(async () => (invoiceCharges().length === paidBefore + 2 && (await account()).allowance === 100 ? true : undefined), 10_000, 'renewed again');

    const before = await account();
    await sim().refund(period.charge);
    await sim().flush();
    // 40 were used of that period, not 90
    await eventually(async () => ((await invoicePayment(period.invoice))?.credits_clawed_back === 40 ? true : undefined), 10_000, 'the clawback');
    const after = await account();
    expect(before.purchased - after.purchased + (after.debt - before.debt)).toBe(40);
    expect(after.allowance).toBe(before.allowance);
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 30_000);

  it('an invoice grants the plan it billed, even when the plan changed before its invoice.paid was handled', async () => {
    const org = p.tenant.organizationId;
    const plan = async (item: string) => {
      const res = await p.app.inject({ method: 'POST', url: `/v1/organizations/${org}/plan`, headers: bearer(p.op), payload: { plan: item, reason: 'test' } });
      expect(res.statusCode, res.body).toBe(200);
    };
    sim().setWebhookUrl(undefined);
    await sim().advanceClock(); // billed as Pro (€9.00), its event not delivered yet
    const paid = sim()
      .events()
      .filter((e) => e.type === 'invoice.paid')
      .at(-1)!;
    expect((paid.data.object as unknown as { amount_paid: number }).amount_paid).toBe(900);
    sim().setWebhookUrl(`${p.apiUrl}/webhooks/stripe`);
    await plan('ultra'); // billed from the next invoice on
    expect(await postSigned(paid)).toBe(200);
    expect((await account()).allowance).toBe(100);
    const invoice = (paid.data.object as unknown as { id: string }).id;
    expect(await invoicePayment(invoice)).toMatchObject({ allowance: 100 });

    await sim().advanceClock(); // billed as Ultra
    await sim().flush();
    await eventually(async () => ((await account()).allowance === 500 ? true : undefined), 10_000, 'the Ultra allowance');
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 30_000);

  it('a lost dispute whose events name no payment intent still claws back, through its charge', async () => {
    const latest = invoiceCharges().at(-1)!;
    const before = await invoicePayment(latest.invoice);
    sim().setWebhookUrl(undefined);
    const dispute = await sim().dispute(latest.charge);
    await sim().closeDispute(dispute, 'lost');
    sim().setWebhookUrl(`${p.apiUrl}/webhooks/stripe`);
    // both events as an older charge's would come: without payment_intent, the charge only
    for (const type of ['charge.dispute.created', 'charge.dispute.closed']) {
      const event = structuredClone(
        sim()
          .events()
          .filter((e) => e.type === type && (e.data.object as unknown as { id: string }).id === dispute)
          .at(-1)!,
      );
      delete (event.data.object as unknown as Record<string, unknown>).payment_intent;
      expect(await postSigned(event)).toBe(200);
    }
    expect(before?.credits_clawed_back).toBe(0);
    expect(await invoicePayment(latest.invoice)).toMatchObject({ refunded_amount: latest.amount, credits_clawed_back: 500 });
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 30_000);
});
