import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { DEFAULT_CATALOG } from '../src/payments/index.ts';
import { signatureHeader } from '../src/payments/simulator/index.ts';
import { bearer } from './helpers/app.ts';
import { campaignAction, createCampaign, makeAudience, recipients, waitForCampaign } from './helpers/campaigns.ts';
import { storedAccount } from './helpers/orgs.ts';
import { eventually, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * Payments through the official Stripe SDK and the Stripe-compatible
 * simulator over real HTTP: credits only for payments that settled, once,
 * whatever the webhooks do; refunds, disputes and subscriptions act on
 * sending at the next claim.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline({ payments: true, senderMps: 1000 });
});
afterAll(async () => {
  await p?.close();
});

const sim = () => p.payments!;

async function checkout(kind: 'pack' | 'plan', item: string): Promise<string> {
  const res = await p.app.inject({ method: 'POST', url: '/v1/billing/checkout', headers: bearer(p.tenant.orgKey), payload: { kind, item } });
  expect(res.statusCode, res.body).toBe(201);
  const body = res.json() as { session_id: string; url: string };
  expect(body.url).toContain(`/pay/${body.session_id}`);
  return body.session_id;
}

const account = () => storedAccount(p.tdb.db, p.tenant.organizationId);

async function postEvent(raw: string, header: string) {
  const res = await fetch(`${p.apiUrl}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': header }, body: raw });
  return res.status;
}

function eventFor(type: string, match: (o: Record<string, unknown>) => boolean) {
  const e = sim()
    .events()
    .filter((x) => x.type === type && match(x.data.object as unknown as Record<string, unknown>))
    .at(-1);
  if (e === undefined) throw new Error(`no ${type} event`);
  return e;
}

describe('credit packs', () => {
  it('the same completed checkout five times at once, plus the return URL, grants the credits once', async () => {
    const before = await account();
    const id = await checkout('pack', 'starter');
    sim().setWebhookUrl(undefined); // deliver by hand below
    await sim().pay(id);
    const event = eventFor('checkout.session.completed', (o) => o.id === id);
    const raw = JSON.stringify(event);
    const header = signatureHeader(sim().webhookSecret, raw, Math.floor(Date.now() / 1000));
    const statuses = await Promise.all([...Array.from({ length: 5 }, () => postEvent(raw, header)), fetch(`${p.apiUrl}/billing/return?session_id=${id}`).then((r) => r.status)]);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200]);
    const after = await account();
    expect(after.purchased - before.purchased).toBe(100);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from ledger_entries where organization_id = ${p.tenant.organizationId}
      and kind = 'purchase' and idempotency_key like ${`checkout:${id}%`}`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(1);
    sim().setWebhookUrl(`${p.apiUrl}/webhooks/stripe`);
  });

  it('a tampered body, a stale timestamp or re-serialized JSON is 400 and changes nothing', async () => {
    const id = await checkout('pack', 'standard');
    sim().setWebhookUrl(undefined);
    await sim().pay(id);
    const event = eventFor('checkout.session.completed', (o) => o.id === id);
    const raw = JSON.stringify(event);
    const now = Math.floor(Date.now() / 1000);
    const before = await account();
    expect(await postEvent(raw.replace('"paid"', '"paid" '), signatureHeader(sim().webhookSecret, raw, now))).toBe(400);
    expect(await postEvent(raw, signatureHeader(sim().webhookSecret, raw, now - 3_600))).toBe(400);
    expect(await postEvent(JSON.stringify(JSON.parse(raw), null, 2), signatureHeader(sim().webhookSecret, raw, now))).toBe(400);
    expect(await postEvent(raw, 't=1,v1=deadbeef')).toBe(400);
    expect(await account()).toEqual(before);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from stripe_events where id = ${event.id}`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(0);
    // the genuine one is accepted
    expect(await postEvent(raw, signatureHeader(sim().webhookSecret, raw, now))).toBe(200);
    expect((await account()).purchased - before.purchased).toBe(500);
    sim().setWebhookUrl(`${p.apiUrl}/webhooks/stripe`);
  });

  it('two partial refunds and a redelivered first refund take back exactly the refunded share', async () => {
    const id = await checkout('pack', 'standard'); // 500 credits for €12.50
    await sim().pay(id);
    await sim().flush();
    const { rows } = await sql<{ payment_intent: string }>`select payment_intent from checkout_sessions where id = ${id}`.execute(p.tdb.db);
    const pi = rows[0]!.payment_intent;
    const chargeEventId = await chargeOf(pi);
    const before = await account();
    await sim().refund(chargeEventId, 250); // 20 %
    await sim().flush();
    const first = eventFor('charge.refunded', (o) => o.id === chargeEventId);
    await sim().refund(chargeEventId, 500); // now 60 % in all
    await sim().flush();
    // the first refund event again, late
    const raw = JSON.stringify(first);
    expect(await postEvent(raw, signatureHeader(sim().webhookSecret, raw, Math.floor(Date.now() / 1000)))).toBe(200);
    const after = await account();
    expect(before.purchased + before.allowance - (after.purchased + after.allowance) + (after.debt - before.debt)).toBe(300);
    const { rows: pay } = await sql<{ refunded_amount: number; credits_clawed_back: number }>`select refunded_amount, credits_clawed_back from payments where payment_intent = ${pi}`.execute(p.tdb.db);
    expect(pay[0]).toEqual({ refunded_amount: 750, credits_clawed_back: 300 });
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  });
});

/** The charge of a payment intent, asked of the simulator's API. */
async function chargeOf(paymentIntent: string): Promise<string> {
  const res = await fetch(`${sim().url}/v1/payment_intents/${paymentIntent}`, { headers: { authorization: `Bearer ${sim().secretKey}` } });
  const intent = (await res.json()) as { latest_charge: string | null };
  if (!intent.latest_charge) throw new Error(`no charge for ${paymentIntent}`);
  return intent.latest_charge;
}

describe('disputes and subscriptions act on sending at the next claim', () => {
  it('a dispute freezes sending mid-campaign; won, it unfreezes and the campaign completes', async () => {
    const id = await checkout('pack', 'large');
    await sim().pay(id);
    await sim().flush();
    const { rows } = await sql<{ payment_intent: string }>`select payment_intent from checkout_sessions where id = ${id}`.execute(p.tdb.db);
    const chargeId = await chargeOf(rows[0]!.payment_intent);
    const audience = await makeAudience(p, 30, { firstPhone: 8000 });
    await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(p.tenant.workspaceKey), payload: { phone_number: '+14155550155', mps: 5 } });
    const { id: cmp } = await createCampaign(p, audience.listId, { from: '+14155550155' });
    await campaignAction(p, cmp, 'start');
    await eventually(async () => (p.simulator.log().filter((e) => e.from === '+14155550155').length >= 3 ? true : undefined), 20_000, 'first sends');
    const dispute = await sim().dispute(chargeId);
    await sim().flush();
    const claims = async () => {
      const { rows: r } = await sql<{ n: number }>`select count(*)::int as n from message_events e join messages m on m.id = e.message_id
        where m.campaign_id = ${cmp} and e.event = 'claim'`.execute(p.tdb.db);
      return r[0]!.n;
    };
    const atFreeze = await claims();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await claims()).toBe(atFreeze);
    const billing = await p.app.inject({ method: 'GET', url: '/v1/billing', headers: bearer(p.tenant.orgKey) });
    expect((billing.json() as { can_send: boolean }).can_send).toBe(false);
    await sim().closeDispute(dispute, 'won');
    await sim().flush();
    await waitForCampaign(p, cmp, (c) => c.status === 'completed', 60_000).catch(async (err: Error) => {
      const { rows: diag } = await sql`select status, status_reason, count(*)::int as n from messages where campaign_id = ${cmp} group by 1, 2`.execute(p.tdb.db);
      const { rows: org } = await sql`select frozen_at, frozen_by from organizations where id = ${p.tenant.organizationId}`.execute(p.tdb.db);
      throw new Error(`${err.message}: ${JSON.stringify(diag)} ${JSON.stringify(org)} ${JSON.stringify(await waitForCampaign(p, cmp, () => true))}`);
    });
    const recs = await recipients(p, cmp);
    for (const r of recs) expect(p.simulator.log().filter((e) => e.to === r.phone), `seq ${r.seq}`).toHaveLength(1);
  }, 90_000);

  it('a plan grants its allowance; a renewal expires the rest and grants it again; a cancelled subscription stops the next claim', async () => {
    const id = await checkout('plan', 'pro');
    await sim().pay(id);
    await sim().flush();
    await eventually(async () => ((await account()).allowance === 100 ? true : undefined), 10_000, 'allowance granted');
    // spend 30 of the allowance
    const { rows: sub } = await sql<{ stripe_subscription_id: string; status: string }>`select stripe_subscription_id, status from subscriptions where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    expect(sub[0]!.status).toBe('active');
    await credits.reserve(p.tdb.db, { organizationId: p.tenant.organizationId, items: [{ messageId: 'renewal-probe', amount: 30 }], idempotencyKey: 'renewal-probe', actor: { type: 'system', id: 'test' } });
    expect((await account()).allowance).toBe(70);
    await sim().advanceClock();
    await sim().flush();
    await eventually(async () => ((await account()).allowance === 100 ? true : undefined), 10_000, 'renewed');
    const { rows: expiry } = await sql<{ n: number }>`select count(*)::int as n from ledger_entries
      where organization_id = ${p.tenant.organizationId} and kind = 'allowance_expiry'`.execute(p.tdb.db);
    expect(expiry[0]!.n).toBeGreaterThan(0);

    // a campaign is sending when the subscription is cancelled
    const audience = await makeAudience(p, 30, { firstPhone: 8100 });
    await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(p.tenant.workspaceKey), payload: { phone_number: '+14155550144', mps: 5 } });
    const { id: cmp } = await createCampaign(p, audience.listId, { from: '+14155550144' });
    await campaignAction(p, cmp, 'start');
    await eventually(async () => (p.simulator.log().filter((e) => e.from === '+14155550144').length >= 3 ? true : undefined), 20_000, 'first sends');
    await sim().cancelSubscription(sub[0]!.stripe_subscription_id);
    await sim().flush();
    const claims = async () => {
      const { rows: r } = await sql<{ n: number }>`select count(*)::int as n from message_events e join messages m on m.id = e.message_id
        where m.campaign_id = ${cmp} and e.event = 'claim'`.execute(p.tdb.db);
      return r[0]!.n;
    };
    const atCancel = await claims();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await claims()).toBe(atCancel);
    expect(atCancel).toBeLessThan(30);
    const { rows: state } = await sql<{ status: string }>`select status from subscriptions where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    expect(state[0]!.status).toBe('canceled');
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  }, 90_000);
});

describe('operator actions', () => {
  it('a plan change takes effect at the next renewal; freeze and unfreeze are audited and gate sending', async () => {
    const id = await checkout('plan', 'pro');
    await sim().pay(id);
    await sim().flush();
    await eventually(async () => {
      const { rows } = await sql<{ status: string }>`select status from subscriptions where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
      return rows[0]?.status === 'active' ? true : undefined;
    }, 10_000, 'active subscription');
    const change = await p.app.inject({
      method: 'POST',
      url: `/v1/organizations/${p.tenant.organizationId}/plan`,
      headers: bearer(p.op),
      payload: { plan: 'ultra', reason: 'customer upgraded by phone' },
    });
    expect(change.statusCode, change.body).toBe(200);
    const subscriptionId = (change.json() as { subscription_id: string }).subscription_id;
    await sim().advanceClock();
    await sim().flush();
    await eventually(async () => ((await account()).allowance === 500 ? true : undefined), 10_000, 'ultra allowance');
    // Stripe bills the new plan from this renewal on: the item's price, not only our metadata
    const renewal = sim()
      .events()
      .filter((e) => e.type === 'invoice.paid')
      .map((e) => e.data.object as unknown as { subscription: string; billing_reason: string; amount_paid: number; lines: { data: { description: string }[] } })
      .filter((i) => i.subscription === subscriptionId)
      .at(-1)!;
    const ultra = DEFAULT_CATALOG.plans.find((x) => x.id === 'ultra')!;
    expect(renewal.billing_reason).toBe('subscription_cycle');
    expect(renewal.amount_paid).toBe(ultra.amount);
    expect(renewal.lines.data[0]!.description).toContain(ultra.name);
    // a second change to the same plan reuses its product
    const again = await p.app.inject({ method: 'POST', url: `/v1/organizations/${p.tenant.organizationId}/plan`, headers: bearer(p.op), payload: { plan: 'ultra', reason: 'again' } });
    expect(again.statusCode, again.body).toBe(200);
    const bad = await p.app.inject({ method: 'POST', url: `/v1/organizations/${p.tenant.organizationId}/plan`, headers: bearer(p.op), payload: { plan: 'gold', reason: 'x' } });
    expect(bad.statusCode).toBe(422);
    const notOperator = await p.app.inject({ method: 'POST', url: `/v1/organizations/${p.tenant.organizationId}/freeze`, headers: bearer(p.tenant.orgKey), payload: { reason: 'x' } });
    expect(notOperator.statusCode).toBe(403);

    const freeze = await p.app.inject({ method: 'POST', url: `/v1/organizations/${p.tenant.organizationId}/freeze`, headers: bearer(p.op), payload: { reason: 'fraud review' } });
    expect(freeze.statusCode).toBe(200);
    const view = async () => (await p.app.inject({ method: 'GET', url: '/v1/billing', headers: bearer(p.tenant.orgKey) })).json() as { can_send: boolean; plan: string };
    expect(await view()).toMatchObject({ can_send: false, plan: 'ultra' });
    const res = await p.app.inject({
      method: 'POST',
      url: '/v1/messages',
      headers: bearer(p.tenant.workspaceKey),
      payload: { to: '+14155559001', body: 'while frozen', purpose: 'transactional' },
    });
    const msgId = (res.json() as { id: string }).id;
    await eventually(async () => {
      const { rows } = await sql<{ status: string; status_reason: string }>`select status, status_reason from messages where id = ${msgId}`.execute(p.tdb.db);
      return rows[0]?.status === 'blocked' ? rows[0] : undefined;
    }, 10_000, 'blocked while frozen');
    await p.app.inject({ method: 'POST', url: `/v1/organizations/${p.tenant.organizationId}/unfreeze`, headers: bearer(p.op), payload: { reason: 'cleared' } });
    expect((await view()).can_send).toBe(true);
    await eventually(async () => (p.simulator.log().some((e) => e.to === '+14155559001') ? true : undefined), 15_000, 'sent after unfreeze');
    const { rows: audit } = await sql<{ action: string; reason: string }>`select action, reason from audit_log
      where organization_id = ${p.tenant.organizationId} and action in ('organization.plan_change', 'organization.freeze', 'organization.unfreeze') order by created_at`.execute(p.tdb.db);
    expect(audit.map((a) => a.action)).toEqual(['organization.plan_change', 'organization.plan_change', 'organization.freeze', 'organization.unfreeze']);
  }, 60_000);
});

describe('delayed payments and past_due', () => {
  it('a delayed payment grants nothing until it settles; a failed renewal leaves the grace period, then closes the gate', async () => {
    const before = await account();
    const id = await checkout('pack', 'starter');
    await sim().pay(id, { delayed: true });
    await sim().flush();
    expect((await fetch(`${p.apiUrl}/billing/return?session_id=${id}`).then((r) => r.text())).includes('not completed')).toBe(true);
    expect((await account()).purchased).toBe(before.purchased);
    await sim().settleDelayed(id);
    await sim().flush();
    await eventually(async () => ((await account()).purchased === before.purchased + 100 ? true : undefined), 10_000, 'credits after settlement');

    const { rows } = await sql<{ stripe_subscription_id: string }>`select stripe_subscription_id from subscriptions where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    sim().failNextRenewal(rows[0]!.stripe_subscription_id);
    await sim().advanceClock();
    await sim().flush();
    const state = async () => {
      const { rows: r } = await sql<{ status: string; grace: boolean; ok: boolean }>`select status, grace_until > now() as grace,
        credence_subscription_ok(organization_id) as ok from subscriptions where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
      return r[0]!;
    };
    await eventually(async () => ((await state()).status === 'past_due' ? true : undefined), 10_000, 'past_due');
    expect(await state()).toEqual({ status: 'past_due', grace: true, ok: true });
    // the grace period runs out
    await sql`update subscriptions set grace_until = now() - interval '1 second' where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    expect((await state()).ok).toBe(false);
    const view = (await p.app.inject({ method: 'GET', url: '/v1/billing', headers: bearer(p.tenant.orgKey) })).json() as { can_send: boolean };
    expect(view.can_send).toBe(false);
  }, 60_000);
});

describe('freezes: disputes and operators', () => {
  const frozen = async () => {
    const { rows } = await sql<{ frozen: boolean; by: string | null }>`select frozen_at is not null as frozen, frozen_by as by from organizations where id = ${p.tenant.organizationId}`.execute(p.tdb.db);
    return rows[0]!;
  };
  const paidCharge = async () => {
    const id = await checkout('pack', 'starter');
    await sim().pay(id);
    await sim().flush();
    const { rows } = await sql<{ payment_intent: string }>`select payment_intent from checkout_sessions where id = ${id}`.execute(p.tdb.db);
    return chargeOf(rows[0]!.payment_intent);
  };
  const operator = (action: 'freeze' | 'unfreeze') =>
    p.app.inject({ method: 'POST', url: `/v1/organizations/${p.tenant.organizationId}/${action}`, headers: bearer(p.op), payload: { reason: 'test' } });

  it('a lost dispute stays frozen even when a later dispute is won; an operator unfreeze keeps an open dispute frozen', async () => {
    const first = await paidCharge();
    const d1 = await sim().dispute(first);
    await sim().flush();
    await sim().closeDispute(d1, 'lost');
    await sim().flush();
    expect(await frozen()).toEqual({ frozen: true, by: 'operator' });
    const second = await paidCharge();
    const d2 = await sim().dispute(second);
    await sim().flush();
    await sim().closeDispute(d2, 'won');
    await sim().flush();
    expect((await frozen()).frozen).toBe(true);
    await operator('unfreeze');
    expect((await frozen()).frozen).toBe(false);

    const third = await paidCharge();
    await sim().dispute(third);
    await sim().flush();
    await operator('freeze');
    await operator('unfreeze');
    expect(await frozen()).toEqual({ frozen: true, by: 'dispute' });
  }, 60_000);
});

describe('fulfilment edge cases', () => {
  it('a refund that came before fulfilment is taken into account; a session we never recorded is rebuilt from its metadata', async () => {
    // close the freeze left by the dispute tests (operator) so balances are simple to read
    await p.app.inject({ method: 'POST', url: `/v1/organizations/${p.tenant.organizationId}/unfreeze`, headers: bearer(p.op), payload: { reason: 'test' } });
    const before = await account();
    const id = await checkout('pack', 'standard'); // 500 credits for €12.50
    sim().setWebhookUrl(undefined);
    await sim().pay(id);
    const { payment_intent: pi } = (await (await fetch(`${sim().url}/v1/checkout/sessions/${id}`, { headers: { authorization: `Bearer ${sim().secretKey}` } })).json()) as { payment_intent: string };
    await sim().refund(await chargeOf(pi), 300); // 24 % refunded before we ever fulfilled
    expect(await fetch(`${p.apiUrl}/billing/return?session_id=${id}`).then((r) => r.status)).toBe(200);
    const after = await account();
    expect(after.purchased - before.purchased).toBe(500 - 120);

    // a session whose row was lost (a crash between Stripe and our insert)
    const lost = await checkout('pack', 'starter');
    await sql`delete from checkout_sessions where id = ${lost}`.execute(p.tdb.db);
    await sim().pay(lost);
    expect(await fetch(`${p.apiUrl}/billing/return?session_id=${lost}`).then((r) => r.status)).toBe(200);
    expect((await account()).purchased - after.purchased).toBe(100);
    sim().setWebhookUrl(`${p.apiUrl}/webhooks/stripe`);
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);
  });
});
