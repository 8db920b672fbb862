import { sql } from 'kysely';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { nextAllowedInstant, recipientZones, sendPolicy } from '../src/sendrules/index.ts';
import { bearer, createTenant } from './helpers/app.ts';
import { daytimeZone } from './helpers/campaigns.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline, waitForStatus } from './helpers/pipeline.ts';

/**
 * Consent, number safety, quiet hours and limits, enforced in the real
 * pipeline (API → dispatch → claim → Twilio adapter → carrier simulator):
 * every rule is checked at claim, so a change made while a message waits
 * takes effect before its send (G5, G6).
 */
let p: Pipeline;
let n = 0;
/** A fresh US number per test, so tests sharing the pipeline do not see each other's sends. */
const phone = () => `+1415555${String(1000 + n++).padStart(4, '0')}`;

async function rules(body: Record<string, unknown>) {
  const res = await p.app.inject({
    method: 'PATCH',
    url: `/v1/workspaces/${p.tenant.workspaceId}/sending-rules`,
    headers: bearer(p.tenant.orgKey),
    payload: body,
  });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as { settings: Record<string, unknown>; effective: Record<string, unknown> };
}

async function grantConsent(to: string, purposes: string[], extra: Record<string, unknown> = {}) {
  const res = await p.app.inject({
    method: 'POST',
    url: '/v1/consents',
    headers: bearer(p.tenant.workspaceKey),
    payload: { phone: to, purposes, action: 'granted', source: 'checkout_form', evidence: { form: 'checkout-v2' }, ...extra },
  });
  expect(res.statusCode, res.body).toBe(201);
  return res.json() as { state: Record<string, string>; confirmation_message_id: string | null };
}

async function balance() {
  const { rows } = await sql<{ available: number; reserved: number }>`
    select (allowance_available + purchased_available)::int as available, (reserved_allowance + reserved_purchased)::int as reserved
    from credit_accounts where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
  return rows[0]!;
}

const marketing = (to: string, body: string) => sendViaApi(p, { to, body, purpose: 'marketing', timezone: daytimeZone() });

const carrierCopies = (to: string) => p.simulator.log().filter((e) => e.to === to).length;

beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000 });
  await grantCredits(p, 100_000);
  // Marketing tests need any hour of the day: open the window; specific tests narrow it again.
  await rules({ send_windows: { marketing: { start: '00:00', end: '24:00' } }, hourly_cap: null });
});
afterAll(async () => {
  await p?.close();
});

describe('consent at send time', () => {
  it('a marketing message without consent ends skipped (no_consent), costs nothing and is never retried', async () => {
    const before = await balance();
    const to = phone();
    const res = await sendViaApi(p, { to, body: 'Big sale!', purpose: 'marketing' });
    expect(res.statusCode).toBe(202);
    const m = await waitForStatus(p, res.json.id as string, ['skipped']);
    expect(m.status_reason).toBe('no_consent');
    expect(m.attempts).toBe(0);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from ledger_entries where message_id = ${m.id}`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(0);
    expect(await balance()).toEqual(before);
    expect(carrierCopies(to)).toBe(0);
  });

  it('with consent recorded, the same message goes; transactional needs no express consent', async () => {
    const to = phone();
    await grantConsent(to, ['marketing']);
    const a = await marketing(to, 'Big sale!');
    const b = await sendViaApi(p, { to: phone(), body: 'Your code is 1234', purpose: 'transactional' });
    await waitForStatus(p, a.json.id as string, ['sent', 'delivered']);
    await waitForStatus(p, b.json.id as string, ['sent', 'delivered']);
  });

  it('consent revoked while the message waits: skipped at claim, its reservation released', async () => {
    const to = phone();
    await grantConsent(to, ['marketing']);
    await p.stopWorker();
    try {
      const res = await marketing(to, 'Weekend offer');
      // dispatch by hand (no worker): reserved and queued
      const { dispatchOrganization } = await import('../src/messaging/index.ts');
      await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
      expect((await message(p, res.json.id as string)).status).toBe('queued');
      const revoke = await p.app.inject({
        method: 'POST',
        url: '/v1/consents',
        headers: bearer(p.tenant.workspaceKey),
        payload: { phone: to, purposes: ['marketing'], action: 'revoked' },
      });
      expect(revoke.statusCode).toBe(201);
      await p.startWorker();
      const m = await waitForStatus(p, res.json.id as string, ['skipped', 'sent', 'delivered']);
      expect(m.status).toBe('skipped');
      expect(m.status_reason).toBe('no_consent');
      const { rows } = await sql<{ state: string }>`select state from credit_reservations where message_id = ${m.id}`.execute(p.tdb.db);
      expect(rows.map((r) => r.state)).toEqual(['released']);
      expect(carrierCopies(to)).toBe(0);
    } finally {
      if (p.worker === undefined) await p.startWorker();
    }
  });

  it('an old consent imported after a STOP does not undo the STOP (log order is when it happened)', async () => {
    const to = phone();
    await grantConsent(to, ['marketing'], { occurred_at: new Date(Date.now() - 3_600_000).toISOString() });
    expect(await p.simulator.sendInbound({ from: to, to: '+14155550100', body: 'Stop.' })).toBe(200);
    const old = await grantConsent(to, ['marketing'], { occurred_at: new Date(Date.now() - 86_400_000).toISOString(), source: 'import' });
    expect(old.state.marketing).toBe('revoked');
    const res = await marketing(to, 'Still here?');
    expect((await waitForStatus(p, res.json.id as string, ['skipped'])).status_reason).toBe('no_consent');
  });
});

describe('STOP arriving while messages to that number are being sent', () => {
  it('no send to the number is claimed after the STOP commits; what waited is skipped and released', async () => {
    const to = phone();
    const others = [phone(), phone()];
    // A slow sender, so most messages are still waiting when the STOP arrives.
    const sender = await p.app.inject({
      method: 'POST',
      url: '/v1/sender-numbers',
      headers: bearer(p.tenant.workspaceKey),
      payload: { phone_number: '+14155550177', mps: 5 },
    });
    expect(sender.statusCode).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await sendViaApi(p, { to: i % 4 === 3 ? others[i % 2]! : to, body: `Update ${i}`, from: '+14155550177' });
      expect(res.statusCode).toBe(202);
      ids.push(res.json.id as string);
    }
    await eventually(async () => (carrierCopies(to) >= 3 ? true : undefined), 15_000, 'a few sends to reach the carrier');
    const status = await p.simulator.sendInbound({ from: to, to: '+14155550177', body: 'STOP please' });
    expect(status).toBe(200);
    // The STOP has committed: count the claims of messages to that number now…
    const claimsAt = async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from message_events e join messages m on m.id = e.message_id
        where m.to_number = ${to} and e.event = 'claim'`.execute(p.tdb.db);
      return rows[0]!.n;
    };
    const atStop = await claimsAt();
    // … and let everything else finish.
    await eventually(
      async () => {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where id = any(${ids}::text[])
          and status not in ('sent', 'delivered', 'undelivered', 'skipped', 'failed')`.execute(p.tdb.db);
        return rows[0]!.n === 0 ? true : undefined;
      },
      30_000,
      'all messages settled',
    );
    expect(await claimsAt()).toBe(atStop);
    const { rows } = await sql<{ status: string; status_reason: string | null; n: number }>`
      select status, status_reason, count(*)::int as n from messages where id = any(${ids}::text[]) and to_number = ${to}
      group by 1, 2`.execute(p.tdb.db);
    const skipped = rows.find((r) => r.status === 'skipped');
    expect(skipped?.status_reason).toBe('no_consent');
    expect(skipped!.n).toBeGreaterThan(0);
    const sent = rows.filter((r) => r.status !== 'skipped').reduce((s, r) => s + r.n, 0);
    expect(carrierCopies(to)).toBe(sent);
    // claimed before the STOP: sent, or withdrawn (skipped) if it was still waiting for its rate slot
    expect(sent).toBeLessThanOrEqual(atStop);
    expect(sent).toBeGreaterThanOrEqual(3);
    // the other numbers were not affected
    const { rows: other } = await sql<{ n: number }>`select count(*)::int as n from messages where id = any(${ids}::text[])
      and to_number <> ${to} and status = 'skipped'`.execute(p.tdb.db);
    expect(other[0]!.n).toBe(0);
    // every purpose is revoked, with the inbound message as evidence
    const consent = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
    const body = consent.json() as { state: Record<string, string>; history: { action: string; source: string; evidence: Record<string, unknown> }[] };
    expect(body.state).toEqual({ marketing: 'revoked', transactional: 'revoked', appointment: 'revoked', cart_recovery: 'revoked' });
    expect(body.history.every((h) => h.source === 'inbound_sms' && h.evidence.body === 'STOP please')).toBe(true);
    // no reservation of a skipped message stays open
    const { rows: open } = await sql<{ n: number }>`select count(*)::int as n from credit_reservations r join messages m on m.id = r.message_id
      where m.to_number = ${to} and m.status = 'skipped' and r.state = 'open'`.execute(p.tdb.db);
    expect(open[0]!.n).toBe(0);
  });

  it('START restores what STOP took; a redelivered inbound webhook changes nothing', async () => {
    const to = phone();
    await grantConsent(to, ['marketing']);
    expect(await p.simulator.sendInbound({ from: to, to: '+14155550100', body: 'STOP' })).toBe(200);
    expect(await p.simulator.sendInbound({ from: to, to: '+14155550100', body: 'start' })).toBe(200);
    const res = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
    expect((res.json() as { state: Record<string, string> }).state).toEqual({
      marketing: 'granted',
      transactional: 'granted',
      appointment: 'granted',
      // never granted before the STOP: START does not grant it
      cart_recovery: 'revoked',
    });
  });

  it('HELP is answered with the workspace help text, through the pipeline', async () => {
    const to = phone();
    await rules({ help_text: 'Acme: questions? support@acme.test. Reply STOP to opt out.' });
    expect(await p.simulator.sendInbound({ from: to, to: '+14155550100', body: 'help' })).toBe(200);
    await eventually(async () => (carrierCopies(to) === 1 ? true : undefined), 15_000, 'the HELP answer');
    const copy = p.simulator.log().find((e) => e.to === to)!;
    expect(copy.body).toBe('Acme: questions? support@acme.test. Reply STOP to opt out.');
    expect(copy.from).toBe('+14155550100');
  });

  it('carrier error 21610 fails the message and records an opt-out for every purpose', async () => {
    const to = phone();
    p.simulator.setFaults({ errors: { '21610': 1 } });
    try {
      const res = await sendViaApi(p, { to, body: 'hello?' });
      const m = await waitForStatus(p, res.json.id as string, ['failed']);
      expect(m.error_code).toBe(21610);
    } finally {
      p.simulator.setFaults({});
    }
    const c = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
    const body = c.json() as { state: Record<string, string>; history: { source: string }[] };
    expect(body.state.transactional).toBe('revoked');
    expect(body.history.every((h) => h.source === 'carrier_opt_out')).toBe(true);
    const again = await sendViaApi(p, { to, body: 'hello again' });
    expect((await waitForStatus(p, again.json.id as string, ['skipped'])).status_reason).toBe('no_consent');
  });
});

describe('double opt-in', () => {
  it('a marketing grant stays pending until the person answers YES to the confirmation text', async () => {
    await rules({ double_opt_in: true });
    try {
      const to = phone();
      const r = await grantConsent(to, ['marketing']);
      expect(r.state.marketing).toBe('pending');
      expect(r.confirmation_message_id).not.toBeNull();
      await waitForStatus(p, r.confirmation_message_id!, ['sent', 'delivered']);
      expect(p.simulator.log().find((e) => e.to === to)?.body).toMatch(/reply YES/);
      const early = await marketing(to, 'Offer');
      expect((await waitForStatus(p, early.json.id as string, ['skipped'])).status_reason).toBe('no_consent');
      expect(await p.simulator.sendInbound({ from: to, to: '+14155550100', body: 'Yes!' })).toBe(200);
      const res = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
      expect((res.json() as { state: Record<string, string> }).state.marketing).toBe('granted');
      const later = await marketing(to, 'Offer, confirmed');
      await waitForStatus(p, later.json.id as string, ['sent', 'delivered']);
    } finally {
      await rules({ double_opt_in: false });
    }
  });
});

describe('number safety: refused before any credit is reserved', () => {
  it.each([
    ['+19002345678', 'premium_rate'],
    ['+33810123456', 'shared_cost'],
    ['+4930123456', 'not_mobile'],
    ['+447400123456', 'country_not_allowed'],
  ])('%s → 422 %s, nothing stored, nothing reserved', async (to, reason) => {
    // earlier tests' captures are applied by the drain moments after their outcome: let them land first
    await eventually(async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from capture_queue`.execute(p.tdb.db);
      return rows[0]!.n === 0 ? true : undefined;
    }, 10_000, 'queued captures to be applied');
    const before = await balance();
    const { rows: count0 } = await sql<{ n: number }>`select count(*)::int as n from messages`.execute(p.tdb.db);
    const res = await sendViaApi(p, { to, body: 'hi' });
    expect(res.statusCode).toBe(422);
    expect(res.json).toMatchObject({ type: 'urn:credence:problem:number-refused', reason, errors: [{ field: 'to', reason }] });
    const { rows: count1 } = await sql<{ n: number }>`select count(*)::int as n from messages`.execute(p.tdb.db);
    expect(count1[0]!.n).toBe(count0[0]!.n);
    expect(await balance()).toEqual(before);
  });

  it('a country removed from the allow-list while a message waits: skipped at claim, credits released', async () => {
    await rules({ allowed_countries: ['US', 'GB'] });
    await p.stopWorker();
    try {
      const res = await sendViaApi(p, { to: '+447400123456', body: 'hello UK' });
      expect(res.statusCode).toBe(202);
      const { dispatchOrganization } = await import('../src/messaging/index.ts');
      await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
      expect((await message(p, res.json.id as string)).status).toBe('queued');
      await rules({ allowed_countries: null });
      await p.startWorker();
      const m = await waitForStatus(p, res.json.id as string, ['skipped', 'sent', 'delivered']);
      expect(m.status_reason).toBe('country_not_allowed');
      const { rows } = await sql<{ state: string }>`select state from credit_reservations where message_id = ${m.id}`.execute(p.tdb.db);
      expect(rows.map((r) => r.state)).toEqual(['released']);
    } finally {
      if (p.worker === undefined) await p.startWorker();
      await rules({ allowed_countries: null });
    }
  });
});

describe('quiet hours and limits', () => {
  it('a marketing message outside its window is deferred to the exact next allowed instant, holding no credits', async () => {
    const to = phone();
    await grantConsent(to, ['marketing']);
    // A one-hour window inside the US legal hours that is not now, in the recipient's zone (San Francisco).
    const laHour = DateTime.now().setZone('America/Los_Angeles').hour;
    const hour = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19].find((h) => Math.abs(h - laHour) >= 2)!;
    const window = { start: `${String(hour).padStart(2, '0')}:00`, end: `${String(hour).padStart(2, '0')}:59` };
    await rules({ send_windows: { marketing: window } });
    try {
      const before = await balance();
      const res = await sendViaApi(p, { to, body: 'Night owl offer', purpose: 'marketing' });
      const m = await waitForStatus(p, res.json.id as string, ['deferred', 'sent']);
      expect(m.status).toBe('deferred');
      expect(m.status_reason).toBe('quiet_hours');
      const zones = recipientZones({ contactZone: null, e164: to, country: 'US' });
      expect(zones).toEqual(['America/Los_Angeles']);
      const policy = sendPolicy({ purpose: 'marketing', country: 'US', e164: to, workspaceWindow: { start: hour * 60, end: hour * 60 + 59 } });
      const expected = nextAllowedInstant(new Date(m.created_at), zones, policy);
      // The deferral was decided a moment after creation: same instant unless a window boundary passed in between.
      expect(Math.abs(m.next_attempt_at!.getTime() - expected.getTime())).toBeLessThan(60_000);
      expect(m.next_attempt_at!.getTime()).toBeGreaterThan(Date.now());
      expect(await balance()).toEqual(before);
    } finally {
      await rules({ send_windows: { marketing: { start: '00:00', end: '24:00' } } });
    }
  });

  it('the frequency cap lets one marketing message per phone per 24 h through; the next is skipped (frequency_cap)', async () => {
    const to = phone();
    await grantConsent(to, ['marketing']);
    const a = await marketing(to, 'First offer');
    await waitForStatus(p, a.json.id as string, ['sent', 'delivered']);
    const b = await marketing(to, 'Second offer');
    const m = await waitForStatus(p, b.json.id as string, ['skipped', 'sent', 'delivered']);
    expect(m.status).toBe('skipped');
    expect(m.status_reason).toBe('frequency_cap');
    expect(carrierCopies(to)).toBe(1);
  });

  it('the hourly cap defers transactional messages over it, whatever the number of workers racing', async () => {
    await rules({ hourly_cap: 5 });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 9; i++) ids.push((await sendViaApi(p, { to: phone(), body: `Receipt ${i}` })).json.id as string);
      const settled = await eventually(
        async () => {
          const { rows } = await sql<{ status: string; status_reason: string | null }>`select status, status_reason from messages where id = any(${ids}::text[])`.execute(p.tdb.db);
          return rows.every((r) => ['sent', 'delivered', 'deferred'].includes(r.status)) ? rows : undefined;
        },
        15_000,
        'all sent or deferred',
      );
      // counters only run while a cap is set (it was null until this test)
      const { rows } = await sql<{ n: number }>`select coalesce(sum(sends), 0)::int as n from send_counters where workspace_id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
      expect(rows[0]!.n).toBe(5);
      expect(settled.filter((r) => r.status !== 'deferred').length).toBe(5);
      expect(settled.filter((r) => r.status === 'deferred').every((r) => r.status_reason === 'hourly_cap')).toBe(true);
    } finally {
      await rules({ hourly_cap: null });
    }
  });
});

describe('GDPR', () => {
  it('exports everything about a number, then erases it; the ledger is intact and a later STOP still matches', async () => {
    const to = phone();
    await grantConsent(to, ['marketing']);
    const created = await p.app.inject({ method: 'POST', url: '/v1/contacts', headers: bearer(p.tenant.workspaceKey), payload: { phone: to, first_name: 'Jane', attributes: { tier: 'gold' } } });
    expect(created.statusCode, created.body).toBe(201);
    const sent = await sendViaApi(p, { to, body: 'Hello Jane, your order shipped' });
    await waitForStatus(p, sent.json.id as string, ['sent', 'delivered']);
    const exp = await p.app.inject({ method: 'GET', url: `/v1/privacy/phone-numbers/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
    expect(exp.statusCode).toBe(200);
    const data = exp.json() as { consent: { history: { evidence: unknown }[] }; messages: { id: string; body: string; events: unknown[] }[] };
    expect(data.consent.history[0]!.evidence).toEqual({ form: 'checkout-v2' });
    expect(data.messages.map((m) => m.body)).toEqual(['Hello Jane, your order shipped']);
    expect(data.messages[0]!.events.length).toBeGreaterThanOrEqual(3);
    // the contact record too: "everything held" (it was missing from the export)
    expect((exp.json() as { contacts: unknown[] }).contacts).toMatchObject([{ phone: to, first_name: 'Jane', attributes: { tier: 'gold' }, lists: [] }]);

    const erase = await p.app.inject({ method: 'POST', url: '/v1/privacy/erasures', headers: bearer(p.tenant.workspaceKey), payload: { phone: to } });
    expect(erase.statusCode, erase.body).toBe(200);
    const report = erase.json() as { phone_hash: string; messages_pseudonymized: number; consent_events_pseudonymized: number };
    expect(report).toMatchObject({ messages_pseudonymized: 1, consent_events_pseudonymized: 1 });
    const { rows: left } = await sql<{ n: number }>`select
      (select count(*) from messages where to_number = ${to}) + (select count(*) from consent_events where phone = ${to})
      + (select count(*) from messages where body like '%Jane%') as n`.execute(p.tdb.db);
    expect(Number(left[0]!.n)).toBe(0);
    expect((await message(p, sent.json.id as string)).to_number).toBe(report.phone_hash);
    expect((await credits.verifyLedger(p.tdb.db)).mismatches).toEqual([]);

    // consent without evidence cannot be relied on: every purpose is revoked
    const after = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
    expect((after.json() as { state: Record<string, string> }).state).toEqual({
      marketing: 'revoked',
      transactional: 'revoked',
      appointment: 'revoked',
      cart_recovery: 'revoked',
    });
    // the consent log still knows the number by its hash: a later STOP matches it
    expect(await p.simulator.sendInbound({ from: to, to: '+14155550100', body: 'STOP' })).toBe(200);
    const c = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
    const body = c.json() as { state: Record<string, string>; history: { source: string; evidence: unknown }[] };
    expect(body.state.marketing).toBe('revoked');
    expect(body.history[0]!.evidence).toEqual({ erased: true });
    expect(body.history.filter((h) => h.source === 'inbound_sms')).toHaveLength(4);
  });
});

describe('review fixes', () => {
  it('a consent dated in the future is recorded as now, so a STOP after it wins', async () => {
    const to = phone();
    await grantConsent(to, ['marketing'], { occurred_at: new Date(Date.now() + 4 * 60_000).toISOString() });
    expect(await p.simulator.sendInbound({ from: to, to: '+14155550100', body: 'STOP' })).toBe(200);
    const res = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
    expect((res.json() as { state: Record<string, string> }).state.marketing).toBe('revoked');
  });

  it('a phone number can be the sender of one workspace only (inbound texts are routed by it)', async () => {
    const { createTenant } = await import('./helpers/app.ts');
    const other = await createTenant(p.app, p.op, 'Number Thief');
    const res = await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(other.workspaceKey), payload: { phone_number: '+14155550100' } });
    expect(res.statusCode).toBe(409);
  });

  it('an outcome for an earlier attempt never moves a message that is on a later one', async () => {
    const res = await sendViaApi(p, { to: phone(), body: 'attempt guard' });
    const m = await waitForStatus(p, res.json.id as string, ['sent', 'delivered']);
    const { applyEventTo } = await import('../src/messaging/index.ts');
    const moved = await applyEventTo(p.tdb.db, 'carrier_undelivered', [{ id: m.id, patch: { reason: 'stale', expect_attempts: m.attempts - 1 } }]);
    expect(moved).toEqual([]);
  });
});

describe('tenant isolation (G8) of the consent, privacy, sending-rules and billing routes', () => {
  it("another tenant's keys get 404 for this workspace's data and change nothing", async () => {
    const to = phone();
    await grantConsent(to, ['marketing']);
    const other = await createTenant(p.app, p.op, 'Snoop Co');
    const ws = p.tenant.workspaceId;
    const enc = encodeURIComponent(to);
    const tries = [
      { method: 'GET' as const, url: `/v1/consents/${enc}?workspace_id=${ws}`, key: other.workspaceKey },
      { method: 'GET' as const, url: `/v1/consents/${enc}?workspace_id=${ws}`, key: other.orgKey },
      { method: 'POST' as const, url: `/v1/consents?workspace_id=${ws}`, key: other.orgKey, payload: { phone: to, purposes: ['marketing'], action: 'revoked' } },
      { method: 'GET' as const, url: `/v1/privacy/phone-numbers/${enc}?workspace_id=${ws}`, key: other.orgKey },
      { method: 'POST' as const, url: `/v1/privacy/erasures?workspace_id=${ws}`, key: other.orgKey, payload: { phone: to } },
      { method: 'GET' as const, url: `/v1/workspaces/${ws}/sending-rules`, key: other.orgKey },
      { method: 'PATCH' as const, url: `/v1/workspaces/${ws}/sending-rules`, key: other.orgKey, payload: { hourly_cap: 1 } },
      { method: 'GET' as const, url: `/v1/billing?organization_id=${p.tenant.organizationId}`, key: other.orgKey },
    ];
    for (const t of tries) {
      const res = await p.app.inject({ method: t.method, url: t.url, headers: bearer(t.key), ...(t.payload && { payload: t.payload }) });
      expect(res.statusCode, `${t.method} ${t.url}`).toBe(404);
    }
    const own = await p.app.inject({ method: 'GET', url: `/v1/consents/${enc}`, headers: bearer(p.tenant.workspaceKey) });
    expect((own.json() as { state: Record<string, string> }).state.marketing).toBe('granted');
    const rules = await p.app.inject({ method: 'GET', url: `/v1/workspaces/${ws}/sending-rules`, headers: bearer(p.tenant.orgKey) });
    expect((rules.json() as { settings: { hourly_cap: number | null } }).settings.hourly_cap).toBeNull();
  });
});
