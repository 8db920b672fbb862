import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { twilioSignature } from '../src/carriers/signature.ts';
import { claim } from '../src/messaging/claim.ts';
import { createStatusCallbackBatcher, dispatchOrganization, reconcile, sendBatch } from '../src/messaging/index.ts';
import { bearer, createTenant, silentLog } from './helpers/app.ts';
import { eventually, grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * Reconciliation finds a message with no carrier id by number, sender and
 * body. Identical messages (one number, one reminder text) cannot be told
 * apart that way: a message whose worker died before its call must not take
 * the carrier copy of a sibling whose call is still out (the sibling would
 * then look absent and be sent twice, G2), nor a copy that may be either's.
 */
let p: Pipeline | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

const TO = '+14155552671';
const BODY = 'Reminder: your appointment is tomorrow at 10:00.';

/** A claimed by a worker that died before its carrier call; B's call accepted by the carrier, its answer not back. */
async function claimedAndInFlight(pipe: Pipeline, a: string, b: string) {
  expect(await claim(pipe.sendDeps, [a])).toHaveLength(1);
  await sql`update messages set claimed_at = now() - interval '1 minute', lease_until = now() - interval '1 second' where id = ${a}`.execute(pipe.tdb.db);
  const bSend = sendBatch(pipe.sendDeps, [b]);
  await eventually(async () => (pipe.simulator.log().length === 1 ? true : undefined), 5_000, 'B at the carrier');
  return { bSend, sidB: pipe.simulator.log()[0]!.sid };
}

/** A pipeline with no worker whose carrier takes each message and never answers, and sends no callbacks. */
const startHangingCarrier = () =>
  startPipeline({
    withWorker: false,
    faults: { hangAfterAccept: 1 },
    timeoutMs: 2_000,
    callbackDelayMs: { sent: [600_000, 600_000], final: [600_000, 600_000] },
  });

/** Both look old enough for every step of reconciliation. */
const age = (pipe: Pipeline, ids: string[]) =>
  sql`update messages set claimed_at = now() - interval '1 minute', updated_at = now() - interval '1 minute' where id = any(${ids}::text[])`.execute(pipe.tdb.db);

describe('reconciliation by number and body, with identical siblings', () => {
  it("a message that never left does not take an in-flight sibling's copy; ambiguity is never resent; the callback settles it", async () => {
    p = await startHangingCarrier();
    await grantCredits(p, 10);
    const a = (await sendViaApi(p, { to: TO, body: BODY })).json.id as string;
    const b = (await sendViaApi(p, { to: TO, body: BODY })).json.id as string;
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    const { bSend, sidB } = await claimedAndInFlight(p, a, b);

    await reconcile(p.sendDeps);
    const afterFirst = await message(p, a);
    expect(afterFirst.provider_sid).toBeNull();
    expect(afterFirst.status).toBe('unknown');

    await bSend; // B's worker times out: unknown
    expect((await message(p, b)).status).toBe('unknown');
    // One copy at the carrier, two of ours that could own it: neither is resent, however often we look.
    await age(p, [a, b]);
    await reconcile(p.sendDeps);
    await age(p, [a, b]);
    await reconcile(p.sendDeps);
    expect((await message(p, a)).status).toBe('unknown');
    expect((await message(p, b)).status).toBe('unknown');
    expect(p.simulator.log()).toHaveLength(1);

    // B's status callback (its URL names B) settles B with its copy…
    const url = `${p.apiUrl}/webhooks/twilio/status?message_id=${encodeURIComponent(b)}`;
    const form = { MessageSid: sidB, MessageStatus: 'sent' };
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature(p.simulator.accounts[0]!.authToken, url, form) },
      body: new URLSearchParams(form).toString(),
    });
    expect(res.status).toBe(200);
    expect(await message(p, b)).toMatchObject({ status: 'sent', provider_sid: sidB });
    // …and then A's absence is proven: it goes, once.
    await age(p, [a]);
    await reconcile(p.sendDeps);
    expect((await message(p, a)).status).toBe('queued');
    p.simulator.setFaults({});
    await sendBatch(p.sendDeps, [a]);
    const log = p.simulator.log();
    expect(log).toHaveLength(2);
    expect(log.filter((m) => m.statusCallback!.includes(a))).toHaveLength(1);
    expect(log.filter((m) => m.statusCallback!.includes(b))).toHaveLength(1);
  }, 60_000);

  it("another organization's message with the same alphanumeric sender is not taken either", async () => {
    p = await startHangingCarrier();
    const pipe = p;
    const send = async (name: string) => {
      const t = await createTenant(pipe.app, pipe.op, name);
      await credits.grant(pipe.tdb.db, { organizationId: t.organizationId, amount: 10, idempotencyKey: `g-${t.organizationId}`, actor: { type: 'system', id: 'test' } });
      const s = await pipe.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(t.workspaceKey), payload: { phone_number: 'ACME', kind: 'alphanumeric', mps: 100 } });
      expect(s.statusCode).toBe(201);
      const r = await pipe.app.inject({
        method: 'POST',
        url: '/v1/messages',
        headers: bearer(t.workspaceKey),
        payload: { purpose: 'transactional', to: TO, body: 'Your order has shipped.', from: 'ACME' },
      });
      expect(r.statusCode, r.body).toBe(202);
      await dispatchOrganization(pipe.tdb.db, t.organizationId);
      return (r.json() as { id: string }).id;
    };
    const a = await send('X Co');
    const b = await send('Y Co');
    const { bSend } = await claimedAndInFlight(p, a, b);
    await reconcile(p.sendDeps);
    expect((await message(p, a)).provider_sid).toBeNull();
    await bSend;
    await age(p, [a, b]);
    await reconcile(p.sendDeps);
    expect([(await message(p, a)).status, (await message(p, b)).status]).toEqual(['unknown', 'unknown']);
    expect(p.simulator.log()).toHaveLength(1);
  }, 60_000);

  it('ambiguous messages go to the back of the next runs, so they do not hold the places of the others', async () => {
    p = await startHangingCarrier();
    const pipe = p;
    await grantCredits(p, 10);
    const a = (await sendViaApi(p, { to: TO, body: BODY })).json.id as string;
    const b = (await sendViaApi(p, { to: TO, body: BODY })).json.id as string;
    const c = (await sendViaApi(p, { to: '+14155559001', body: 'Your order shipped' })).json.id as string;
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    expect(await claim(p.sendDeps, [a])).toHaveLength(1);
    await sql`update messages set claimed_at = now() - interval '3 minutes', lease_until = now() - interval '1 second' where id = ${a}`.execute(p.tdb.db);
    await Promise.all([sendBatch(p.sendDeps, [b]), sendBatch(p.sendDeps, [c])]);
    await eventually(async () => (pipe.simulator.log().length === 2 ? true : undefined), 5_000, 'B and C at the carrier');
    await reconcile(p.sendDeps, 1); // A: ambiguous, and unknown now
    // A and B (ambiguous) are older than C: first in a run's order
    await sql`update messages set claimed_at = now() - interval '3 minutes', updated_at = now() - interval '2 minutes' where id = any(${[a, b]}::text[])`.execute(p.tdb.db);
    await sql`update messages set claimed_at = now() - interval '1 minute', updated_at = now() - interval '1 minute' where id = ${c}`.execute(p.tdb.db);
    // runs of two places: the first looks at A and B, and learns nothing; the next must get to C
    await reconcile(p.sendDeps, 2);
    await reconcile(p.sendDeps, 2);
    expect((await message(p, c)).status).toBe('sent');
    expect([(await message(p, a)).status, (await message(p, b)).status]).toEqual(['unknown', 'unknown']);
    expect(p.simulator.log()).toHaveLength(2);
  }, 60_000);

  it("a callback whose carrier id another message holds leaves the rest of its batch applied", async () => {
    p = await startPipeline({ withWorker: false, callbackDelayMs: { sent: [600_000, 600_000], final: [600_000, 600_000] } });
    await grantCredits(p, 20);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await sendViaApi(p, { to: `+1415555300${i}`, body: `other ${i}` })).json.id as string);
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
    const [holder, b, ...others] = ids as [string, string, ...string[]];
    await sendBatch(p.sendDeps, [holder, ...others]);
    // B's carrier message exists, but its id is already on another row (however it got there)
    expect(await claim(p.sendDeps, [b])).toHaveLength(1);
    const sidB = 'SM' + 'b'.repeat(32);
    await sql`update messages set provider_sid = ${sidB} where id = ${holder}`.execute(p.tdb.db);
    const sids = new Map<string, string>();
    for (const id of others) sids.set(id, (await message(p, id)).provider_sid!);
    const batcher = createStatusCallbackBatcher({ db: p.tdb.db, log: silentLog });
    const answers = await Promise.allSettled([
      batcher.submit(b, { MessageSid: sidB, MessageStatus: 'sent' }),
      ...others.map((id) => batcher.submit(id, { MessageSid: sids.get(id)!, MessageStatus: 'delivered' })),
    ]);
    await batcher.close();
    expect(answers.map((x) => x.status)).toEqual(answers.map(() => 'fulfilled'));
    for (const id of others) expect((await message(p, id)).status).toBe('delivered');
    expect(await message(p, b)).toMatchObject({ status: 'sending', provider_sid: null });
  }, 60_000);
});
