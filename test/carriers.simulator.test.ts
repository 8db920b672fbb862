import http from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import twilio from 'twilio';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTwilioClient } from '../src/carriers/twilio.ts';
import { startCarrierSimulator, type CarrierSimulator } from '../src/carriers/simulator/index.ts';
import { createRandom, decideCreate, UNDELIVERED_CODES } from '../src/carriers/simulator/faults.ts';
import { createMessageLog } from '../src/carriers/simulator/log.ts';
import { countSegments, createdMessage } from '../src/carriers/simulator/resources.ts';

/** A local webhook receiver: records every signed POST, answers with `status()`. */
interface Received {
  url: string;
  signature: string | undefined;
  params: Record<string, string>;
}

async function startReceiver(status: (n: number) => number = () => 204) {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const sig = req.headers['x-twilio-signature'];
      received.push({
        url: `${base}${req.url}`,
        signature: typeof sig === 'string' ? sig : undefined,
        params: Object.fromEntries(new URLSearchParams(body)),
      });
      res.writeHead(status(received.length)).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    received,
    close: () => new Promise<void>((r) => server.close(() => r()).closeAllConnections()),
  };
}

async function until<T>(check: () => T | undefined | false, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error('condition not met before the deadline');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const TO = '+15005550006';
const FROM = '+15005550001';

let sim: CarrierSimulator;
let client: twilio.Twilio;
let receiver: Awaited<ReturnType<typeof startReceiver>>;

beforeAll(async () => {
  sim = await startCarrierSimulator({ seed: 7, callbackDelayMs: { sent: [1, 5], final: [1, 5] }, callbackRetry: { backoffMs: 10 } });
  const [account] = sim.accounts;
  client = createTwilioClient({ accountSid: account!.sid, authToken: account!.authToken, baseUrl: sim.url, timeoutMs: 2_000 });
  receiver = await startReceiver();
});

afterEach(() => {
  sim.setFaults({});
  receiver.received.length = 0;
});

afterAll(async () => {
  await sim.stop();
  await receiver.close();
});

const account = () => sim.accounts[0]!;
const raw = (path: string, init: RequestInit = {}, token = account().authToken) =>
  fetch(`${sim.url}${path}`, {
    ...init,
    headers: { authorization: `Basic ${Buffer.from(`${account().sid}:${token}`).toString('base64')}`, ...init.headers },
  });
const form = (fields: Record<string, string>) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});
const messagesPath = () => `/2010-04-01/Accounts/${account().sid}/Messages.json`;

async function rejection(p: Promise<unknown>): Promise<{ status: number; code: number; moreInfo: string }> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(twilio.RestException);
  return err as { status: number; code: number; moreInfo: string };
}

describe('the Messages API, through the official SDK', () => {
  it('creates, fetches and lists messages in Twilio shapes', async () => {
    const created = await client.messages.create({ to: TO, from: FROM, body: 'hello' });
    expect(created.sid).toMatch(/^SM[0-9a-f]{32}$/);
    expect(created).toMatchObject({ accountSid: account().sid, status: 'queued', numSegments: '1', numMedia: '0', direction: 'outbound-api', apiVersion: '2010-04-01', price: null, errorCode: null });
    expect(created.dateCreated).toBeInstanceOf(Date);
    expect(Number.isNaN(created.dateCreated.getTime())).toBe(false);

    const json = (await (await raw(`/2010-04-01/Accounts/${account().sid}/Messages/${created.sid}.json`)).json()) as Record<string, unknown>;
    expect(json.date_created).toMatch(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$/);
    expect(json).toMatchObject({ num_segments: '1', error_code: null, error_message: null, uri: `/2010-04-01/Accounts/${account().sid}/Messages/${created.sid}.json` });

    const fetched = await client.messages(created.sid).fetch();
    expect(fetched.sid).toBe(created.sid);
    expect(fetched.body).toBe('hello');

    const others = Array.from({ length: 4 }, (_, i) => client.messages.create({ to: '+15005550111', from: FROM, body: `n${i}` }));
    await Promise.all(others);
    // pageSize 2 makes the SDK follow next_page_uri twice.
    const listed = await client.messages.list({ to: '+15005550111', pageSize: 2 });
    expect(listed.map((m) => m.body).sort()).toEqual(['n0', 'n1', 'n2', 'n3']);
    const byFrom = await client.messages.list({ to: TO, from: FROM });
    expect(byFrom.map((m) => m.sid)).toContain(created.sid);
    const seen: string[] = [];
    await client.messages.each({ to: '+15005550111', pageSize: 3 }, (m) => seen.push(m.sid));
    expect(seen).toHaveLength(4);

    const past = new Date(Date.now() - 60_000);
    const future = new Date(Date.now() + 60_000);
    expect(await client.messages.list({ to: '+15005550111', dateSentAfter: past })).toHaveLength(4);
    expect(await client.messages.list({ to: '+15005550111', dateSentAfter: future })).toHaveLength(0);
    expect(await client.messages.list({ to: '+15005550111', dateSentBefore: past })).toHaveLength(0);
  });

  it('counts segments like Twilio: GSM-7 160/153, UCS-2 70/67', () => {
    expect(countSegments('a'.repeat(160))).toBe(1);
    expect(countSegments('a'.repeat(161))).toBe(2);
    expect(countSegments('a'.repeat(306))).toBe(2);
    expect(countSegments('a'.repeat(307))).toBe(3);
    expect(countSegments('€'.repeat(80))).toBe(1); // extension characters take two septets
    expect(countSegments('€'.repeat(81))).toBe(2);
    expect(countSegments('é'.repeat(160))).toBe(1);
    expect(countSegments('ж'.repeat(70))).toBe(1);
    expect(countSegments('ж'.repeat(71))).toBe(2);
    expect(countSegments('😀'.repeat(35))).toBe(1);
    expect(countSegments('😀'.repeat(36))).toBe(2);
  });

  it('answers bad credentials with 401 / 20003', async () => {
    const wrong = createTwilioClient({ accountSid: account().sid, authToken: 'nope', baseUrl: sim.url });
    const err = await rejection(wrong.messages.create({ to: TO, from: FROM, body: 'x' }));
    expect(err).toMatchObject({ status: 401, code: 20003, moreInfo: 'https://www.twilio.com/docs/errors/20003' });
    expect(sim.log()).not.toContainEqual(expect.objectContaining({ body: 'x' }));
  });

  it('validates like Twilio, with Twilio-shaped errors', async () => {
    const noTo = await raw(messagesPath(), form({ From: FROM, Body: 'x' }));
    expect(noTo.status).toBe(400);
    expect(await noTo.json()).toEqual({ code: 21604, message: expect.any(String), more_info: 'https://www.twilio.com/docs/errors/21604', status: 400 });
    const noBody = await raw(messagesPath(), form({ To: TO, From: FROM }));
    expect(await noBody.json()).toMatchObject({ code: 21602, status: 400 });
    const noFrom = await raw(messagesPath(), form({ To: TO, Body: 'x' }));
    expect(await noFrom.json()).toMatchObject({ code: 21603, status: 400 });
    expect(await rejection(client.messages.create({ to: '5551234', from: FROM, body: 'x' }))).toMatchObject({ status: 400, code: 21211 });
    expect(await rejection(client.messages.create({ to: TO, from: FROM, body: 'x', statusCallback: 'ftp://x' }))).toMatchObject({ code: 21609 });
    expect(await rejection(client.messages('SM00000000000000000000000000000000').fetch())).toMatchObject({ status: 404, code: 20404 });
  });
});

describe('faults', () => {
  it.each([
    [20429, 429],
    [20500, 500],
    [20503, 503],
    [21211, 400],
    [21408, 400],
    [21610, 400],
    [21612, 400],
    [21614, 400],
  ])('injects %i with HTTP %i and accepts nothing', async (code, status) => {
    sim.setFaults({ errors: { [code]: 1 } });
    const before = sim.log().length;
    expect(await rejection(client.messages.create({ to: TO, from: FROM, body: 'x' }))).toMatchObject({ status, code });
    expect(sim.log()).toHaveLength(before);
    expect(sim.stats().injected[code]).toBeGreaterThan(0);
  });

  it('delays the create call by the latency profile', async () => {
    sim.setFaults({ latencyMs: { min: 80, max: 80 } });
    const t = performance.now();
    await client.messages.create({ to: TO, from: FROM, body: 'slow' });
    expect(performance.now() - t).toBeGreaterThanOrEqual(75);
  });

  it('answers 503 / 20503 during an outage window, and recovers after it', async () => {
    sim.setFaults({ outages: [{ startMs: 0, endMs: sim.uptimeMs() + 60_000 }] });
    expect(await rejection(client.messages.create({ to: TO, from: FROM, body: 'x' }))).toMatchObject({ status: 503, code: 20503 });
    sim.setFaults({ outages: [{ startMs: 0, endMs: 1 }] });
    expect((await client.messages.create({ to: TO, from: FROM, body: 'x' })).status).toBe('queued');
  });

  it('logs a message whose answer it dropped or held', async () => {
    sim.setFaults({ dropAfterAccept: 1 });
    await expect(client.messages.create({ to: TO, from: FROM, body: 'dropped' })).rejects.toMatchObject({ code: 'ECONNRESET' });
    const entry = sim.log().at(-1);
    expect(entry).toMatchObject({ body: 'dropped', answer: 'dropped', answerDropped: true });
    // its callbacks (1–5 ms here) may already have moved it on by the time the reset reaches us
    expect(['queued', 'sent', 'delivered']).toContain(entry?.status);
  });

  it('decides the same faults in the same order for the same seed', async () => {
    const delays = { sent: [0, 10] as [number, number], final: [0, 10] as [number, number] };
    const profile = { errors: { '20429': 0.3 }, dropAfterAccept: 0.2, finalStatus: { undelivered: 0.3 }, latencyMs: { min: 0, max: 50 } };
    const run = (seed: number) => {
      const random = createRandom(seed);
      return Array.from({ length: 50 }, () => decideCreate(profile, random, delays));
    };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));

    // And end to end: two simulators with one seed answer a request sequence alike.
    const outcomes = async (seed: number) => {
      const s = await startCarrierSimulator({ seed, faults: { errors: { '20429': 0.4, '21610': 0.2 } } });
      const c = createTwilioClient({ accountSid: s.accounts[0]!.sid, authToken: s.accounts[0]!.authToken, baseUrl: s.url });
      const seen: (string | number)[] = [];
      for (let i = 0; i < 20; i++) {
        seen.push(await c.messages.create({ to: TO, from: FROM, body: `${i}` }).then((m) => m.status, (e: { code: number }) => e.code));
      }
      await s.stop();
      return seen;
    };
    const first = await outcomes(1234);
    expect(new Set(first).size).toBeGreaterThan(1);
    expect(await outcomes(1234)).toEqual(first);
  });
});

describe('status callbacks', () => {
  const cb = () => `${receiver.base}/webhooks/twilio/status/msg_1?x=1`;

  it('posts sent then the final status, signed as Twilio signs', async () => {
    const m = await client.messages.create({ to: TO, from: FROM, body: 'hi', statusCallback: cb() });
    const got = await until(() => receiver.received.length >= 2 && receiver.received);
    expect(got.map((r) => r.params.MessageStatus)).toEqual(['sent', 'delivered']);
    for (const r of got) {
      expect(r.url).toBe(cb());
      expect(r.params).toMatchObject({ MessageSid: m.sid, SmsSid: m.sid, AccountSid: account().sid, From: FROM, To: TO, ApiVersion: '2010-04-01' });
      expect(r.params.SmsStatus).toBe(r.params.MessageStatus);
      expect(twilio.validateRequest(account().authToken, r.signature ?? '', r.url, r.params)).toBe(true);
      expect(twilio.validateRequest(account().authToken, r.signature ?? '', r.url, { ...r.params, To: '+15550000000' })).toBe(false);
      expect(twilio.validateRequest('another-token', r.signature ?? '', r.url, r.params)).toBe(false);
    }
    expect((await client.messages(m.sid).fetch()).status).toBe('delivered');
  });

  it('reports undelivered with a 300xx error code', async () => {
    sim.setFaults({ finalStatus: { undelivered: 1 } });
    const m = await client.messages.create({ to: TO, from: FROM, body: 'hi', statusCallback: cb() });
    const final = await until(() => receiver.received.find((r) => r.params.MessageStatus === 'undelivered'));
    expect(UNDELIVERED_CODES).toContain(Number(final.params.ErrorCode));
    const fetched = await client.messages(m.sid).fetch();
    expect(fetched).toMatchObject({ status: 'undelivered', errorCode: Number(final.params.ErrorCode) });
  });

  it('can duplicate callbacks and deliver the final one before sent', async () => {
    sim.setFaults({ duplicateCallbacks: 1, reorderCallbacks: 1, finalStatus: { failed: 1 } });
    await client.messages.create({ to: TO, from: FROM, body: 'hi', statusCallback: cb() });
    const got = await until(() => receiver.received.length >= 4 && receiver.received);
    expect(got.map((r) => r.params.MessageStatus)).toEqual(['failed', 'failed', 'sent', 'sent']);
    expect(got[0]!.params.ErrorCode).toMatch(/^300\d\d$/);
    expect(got.every((r) => twilio.validateRequest(account().authToken, r.signature ?? '', r.url, r.params))).toBe(true);
  });

  it('retries a failed delivery, gives up on a dead endpoint, and keeps serving', async () => {
    const flaky = await startReceiver((n) => (n <= 2 ? 500 : 200));
    try {
      await client.messages.create({ to: TO, from: FROM, body: 'hi', statusCallback: `${flaky.base}/s` });
      await until(() => flaky.received.filter((r) => r.params.MessageStatus === 'delivered').length === 1);
      expect(flaky.received.length).toBe(4); // two 500s, then sent and delivered
    } finally {
      await flaky.close();
    }
    const gaveUp = sim.stats().callbacks.gaveUp;
    await client.messages.create({ to: TO, from: FROM, body: 'hi', statusCallback: `${flaky.base}/gone` });
    await until(() => sim.stats().callbacks.gaveUp === gaveUp + 2);
    expect((await client.messages.create({ to: TO, from: FROM, body: 'still up' })).status).toBe('queued');
  });
});

describe('inbound SMS and the admin API', () => {
  it('posts a signed inbound webhook and returns the status it got', async () => {
    const inbound = await startReceiver(() => 200);
    const s = await startCarrierSimulator({ inboundUrl: `${inbound.base}/webhooks/twilio/inbound` });
    try {
      expect(await s.sendInbound({ from: TO, to: FROM, body: 'STOP' })).toBe(200);
      const [r] = inbound.received;
      expect(r!.params).toMatchObject({ AccountSid: s.accounts[0]!.sid, From: TO, To: FROM, Body: 'STOP', NumSegments: '1', NumMedia: '0', ApiVersion: '2010-04-01' });
      expect(r!.params.MessageSid).toMatch(/^SM[0-9a-f]{32}$/);
      expect(r!.params.SmsMessageSid).toBe(r!.params.MessageSid);
      expect(twilio.validateRequest(s.accounts[0]!.authToken, r!.signature ?? '', r!.url, r!.params)).toBe(true);

      const viaAdmin = await fetch(`${s.url}/_sim/inbound`, { method: 'POST', body: JSON.stringify({ from: TO, to: FROM, body: 'hi' }) });
      expect(await viaAdmin.json()).toEqual({ status: 200 });
      expect(inbound.received).toHaveLength(2);
      expect(s.stats().inbound.posted).toBe(2);
    } finally {
      await s.stop();
      await inbound.close();
    }
  });

  it('reads and changes faults, reads the log and stats, and resets', async () => {
    const s = await startCarrierSimulator();
    const c = createTwilioClient({ accountSid: s.accounts[0]!.sid, authToken: s.accounts[0]!.authToken, baseUrl: s.url });
    try {
      const profile = { errors: { '20429': 1 }, latencyMs: { min: 0, max: 1 } };
      const put = await fetch(`${s.url}/_sim/faults`, { method: 'PUT', body: JSON.stringify(profile) });
      expect(put.status).toBe(200);
      expect(await (await fetch(`${s.url}/_sim/faults`)).json()).toEqual(profile);
      expect(s.faults()).toEqual(profile);
      const bad = await fetch(`${s.url}/_sim/faults`, { method: 'PUT', body: JSON.stringify({ dropAfterAccept: 2, bogus: true }) });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { errors: string[] }).errors).toHaveLength(2);
      expect(() => s.setFaults({ latencyMs: { min: 5, max: 1 } })).toThrow(/latencyMs/);

      await expect(c.messages.create({ to: TO, from: FROM, body: 'x' })).rejects.toMatchObject({ code: 20429 });
      await fetch(`${s.url}/_sim/faults`, { method: 'PUT', body: '{}' });
      const m = await c.messages.create({ to: TO, from: FROM, body: 'logged', statusCallback: 'http://127.0.0.1:1/cb' });
      const log = (await (await fetch(`${s.url}/_sim/log`)).json()) as { sid: string; statusCallback: string; segments: number; answer: string; acceptedAt: string }[];
      expect(log).toEqual([expect.objectContaining({ sid: m.sid, statusCallback: 'http://127.0.0.1:1/cb', segments: 1, answer: 'answered' })]);
      expect(Number.isNaN(Date.parse(log[0]!.acceptedAt))).toBe(false);
      const stats = (await (await fetch(`${s.url}/_sim/stats`)).json()) as { accepted: number; createRequests: number; injected: Record<string, number> };
      expect(stats).toMatchObject({ accepted: 1, createRequests: 2, injected: { '20429': 1 } });

      expect((await fetch(`${s.url}/_sim/reset`, { method: 'POST' })).status).toBe(204);
      expect(s.log()).toEqual([]);
      expect(s.stats().accepted).toBe(0);
    } finally {
      await s.stop();
    }
  });
});

describe('the message log (list queries)', () => {
  it('pages a number\'s messages newest first, from its index, while other numbers\' messages interleave and new ones arrive', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('+15005550001', '+15005550002', '+15005550003'), { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 7 }),
        fc.constantFrom('+15005550001', '+15005550002', '+15005550004'),
        (tos, pageSize, to) => {
          const log = createMessageLog();
          const accountSid = 'AC00000000000000000000000000000000';
          const add = (n: string, i: number) =>
            log.add(
              createdMessage({ accountSid, to: n, from: '+15005550100', body: `m${i}`, statusCallback: null, messagingServiceSid: null, finalStatus: 'delivered', answer: 'answered' }),
            );
          tos.forEach(add);
          const expected = log.all().filter((m) => m.to === to).map((m) => m.body).reverse();
          const seen: string[] = [];
          let query = new URLSearchParams({ To: to, PageSize: String(pageSize) });
          for (let pages = 0; ; pages++) {
            if (pages > tos.length) throw new Error(`paging does not end: ${seen.join(' ')}`);
            const answer = log.page(accountSid, query);
            if (!('page' in answer)) throw new Error(answer.invalid);
            const page = answer.page as { messages: { body: string }[]; next_page_uri: string | null };
            seen.push(...page.messages.map((m) => m.body));
            // a message arriving between pages is not in this listing's later pages
            add(to, 1000 + pages);
            if (page.next_page_uri === null) break;
            query = new URL(page.next_page_uri, 'http://x').searchParams;
          }
          expect(seen).toEqual(expected);
        },
      ),
    );
  });
});
