import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { twilioSignature } from '../src/carriers/signature.ts';
import { bearer } from './helpers/app.ts';
import { grantCredits, message, type Pipeline, sendViaApi, startPipeline, waitForStatus } from './helpers/pipeline.ts';

/**
 * Consent defects a review found (2026-11-24): 21610 in a status callback,
 * the double opt-in question sent to a number that texted STOP, and a HELP
 * from a sender that cannot be texted back. The whole pipeline runs; final
 * status callbacks come late, so a sent message stays `sent` to be reported on.
 */
let p: Pipeline;
let n = 0;
const phone = () => `+1415555${String(2000 + n++).padStart(4, '0')}`;
const SENDER = '+14155550100';

async function consentState(to: string) {
  const res = await p.app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(to)}`, headers: bearer(p.tenant.workspaceKey) });
  return (res.json() as { state: Record<string, string> }).state;
}
/** A webhook signed as the carrier signs it. */
async function signedPost(path: string, params: Record<string, string>) {
  const url = `${p.apiUrl}${path}`;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature(p.simulator.accounts[0]!.authToken, url, params) },
    body: new URLSearchParams(params).toString(),
  });
  return { status: res.status, body: await res.text() };
}
async function rules(body: Record<string, unknown>) {
  const res = await p.app.inject({ method: 'PATCH', url: `/v1/workspaces/${p.tenant.workspaceId}/sending-rules`, headers: bearer(p.tenant.orgKey), payload: body });
  expect(res.statusCode, res.body).toBe(200);
}

beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000, callbackDelayMs: { sent: [5, 10], final: [600_000, 600_000] } });
  await grantCredits(p, 100_000);
  await rules({ send_windows: { marketing: { start: '00:00', end: '24:00' } }, hourly_cap: null });
});
afterAll(async () => {
  await p?.close();
});

describe('21610 reported after the carrier took the message (a Messaging Service sender reports it in the status callback)', () => {
  it('records the opt-out, as on the send path: every purpose revoked, the next message to the number skipped', async () => {
    const to = phone();
    const m = await waitForStatus(p, (await sendViaApi(p, { to, body: 'first' })).json.id as string, ['sent']);
    const r = await signedPost(`/webhooks/twilio/status?message_id=${m.id}`, { MessageSid: m.provider_sid!, MessageStatus: 'failed', ErrorCode: '21610', To: to, From: SENDER });
    expect(r.status).toBe(200);
    expect(await message(p, m.id)).toMatchObject({ status: 'undelivered', error_code: 21610 });
    expect(await consentState(to)).toEqual({ marketing: 'revoked', transactional: 'revoked', appointment: 'revoked', cart_recovery: 'revoked' });
    const next = await waitForStatus(p, (await sendViaApi(p, { to, body: 'second' })).json.id as string, ['sent', 'skipped', 'failed']);
    expect(next.status).toBe('skipped');
    // the same callback again changes nothing more
    expect((await signedPost(`/webhooks/twilio/status?message_id=${m.id}`, { MessageSid: m.provider_sid!, MessageStatus: 'failed', ErrorCode: '21610', To: to, From: SENDER })).status).toBe(200);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from consent_events where source = 'carrier_opt_out' and evidence->>'message_id' = ${m.id}`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(4);
  });
});

describe('double opt-in', () => {
  it('a backdated grant under a later STOP leaves marketing revoked and sends no "reply YES" question', async () => {
    await rules({ double_opt_in: true });
    try {
      const to = phone();
      expect(await p.simulator.sendInbound({ from: to, to: SENDER, body: 'STOP' })).toBe(200);
      const res = await p.app.inject({
        method: 'POST',
        url: '/v1/consents',
        headers: bearer(p.tenant.workspaceKey),
        payload: { phone: to, purposes: ['marketing'], action: 'granted', source: 'checkout_form', occurred_at: new Date(Date.now() - 86_400_000).toISOString() },
      });
      expect(res.statusCode, res.body).toBe(201);
      const body = res.json() as { state: Record<string, string>; confirmation_message_id: string | null };
      expect(body.state.marketing).toBe('revoked');
      expect(body.confirmation_message_id).toBeNull();
      // and a grant now (after the STOP) asks, as before
      const fresh = phone();
      const asked = await p.app.inject({ method: 'POST', url: '/v1/consents', headers: bearer(p.tenant.workspaceKey), payload: { phone: fresh, purposes: ['marketing'], action: 'granted', source: 'checkout_form' } });
      expect((asked.json() as { state: Record<string, string>; confirmation_message_id: string | null })).toMatchObject({ state: { marketing: 'pending' }, confirmation_message_id: expect.stringMatching(/^msg_/) });
      await new Promise((r) => setTimeout(r, 500));
      expect(p.simulator.log().filter((e) => e.to === to)).toEqual([]);
    } finally {
      await rules({ double_opt_in: false });
    }
  });
});

describe('HELP from a sender that cannot be texted back', () => {
  it('is stored (200), not answered', async () => {
    const r = await signedPost('/webhooks/twilio/inbound', { MessageSid: 'SMconsentreviewhelp00000000000001', From: '+15555550123', To: SENDER, Body: 'HELP' });
    expect(r.status, r.body).toBe(200);
    const { rows } = await sql<{ keyword: string | null }>`select keyword from inbound_messages where provider_sid = 'SMconsentreviewhelp00000000000001'`.execute(p.tdb.db);
    expect(rows).toEqual([{ keyword: 'HELP' }]);
  });
});

describe('numbers the workspace may not text get no system message either (a later review, 2026-11-24)', () => {
  const PREMIUM = '+19002345678'; // US premium rate: POST /v1/messages refuses it with a 422
  it('the double opt-in question is not sent to a premium-rate number', async () => {
    await rules({ double_opt_in: true });
    try {
      const res = await p.app.inject({
        method: 'POST',
        url: '/v1/consents',
        headers: bearer(p.tenant.workspaceKey),
        payload: { phone: PREMIUM, purposes: ['marketing'], action: 'granted', source: 'checkout_form', evidence: { form: 'signup' } },
      });
      expect(res.statusCode, res.body).toBe(201);
      expect(JSON.stringify(res.json())).toContain('"confirmation_message_id":null');
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where to_number = ${PREMIUM}`.execute(p.tdb.db);
      expect(rows[0]!.n).toBe(0);
    } finally {
      await rules({ double_opt_in: false });
    }
  });

  it('a HELP from a premium-rate number is stored, not answered', async () => {
    const from = '+19003456789';
    const r = await signedPost('/webhooks/twilio/inbound', { MessageSid: 'SMconsentreviewhelp00000000000002', From: from, To: SENDER, Body: 'HELP' });
    expect(r.status, r.body).toBe(200);
    const { rows } = await sql<{ keyword: string | null }>`select keyword from inbound_messages where provider_sid = 'SMconsentreviewhelp00000000000002'`.execute(p.tdb.db);
    expect(rows).toEqual([{ keyword: 'HELP' }]);
    await new Promise((r) => setTimeout(r, 1_000));
    const { rows: replies } = await sql<{ n: number }>`select count(*)::int as n from messages where to_number = ${from}`.execute(p.tdb.db);
    expect(replies[0]!.n).toBe(0);
    expect(p.simulator.log().filter((e) => e.to === from)).toHaveLength(0);
  });
});
