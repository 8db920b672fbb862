import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Carrier, SendRequest } from '../src/carriers/carrier.ts';
import { classifyTransportFailure, createTwilioCarrier, startCarrierSimulator, type CarrierSimulator } from '../src/carriers/index.ts';
import { freePort } from './helpers/ports.ts';

async function until<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error('condition not met before the deadline');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A webhook receiver that keeps what it got, to check signatures with the adapter. */
async function startReceiver() {
  const received: { url: string; signature: string | undefined; params: Record<string, string> }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const sig = req.headers['x-twilio-signature'];
      received.push({ url: `${base}${req.url}`, signature: typeof sig === 'string' ? sig : undefined, params: Object.fromEntries(new URLSearchParams(body)) });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, received, close: () => new Promise<void>((r) => server.close(() => r()).closeAllConnections()) };
}

/** A server that answers every request with the same raw response (a proxy, a broken gateway). */
async function startRawServer(status: number, body: string, contentType: string) {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(status, { 'content-type': contentType }).end(body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => server.close(() => r()).closeAllConnections()) };
}

const refuses = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });

const TO = '+15005550006';
const FROM = '+15005550001';

let sim: CarrierSimulator;
let carrier: Carrier;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
let n = 0;

const account = () => sim.accounts[0]!;
const adapter = (extra: { timeoutMs?: number; maxSockets?: number; publicUrl?: string; baseUrl?: string } = {}) =>
  createTwilioCarrier({ accountSid: account().sid, authToken: account().authToken, baseUrl: sim.url, ...extra });
const request = (over: Partial<SendRequest> = {}): SendRequest => ({
  messageId: `msg_${++n}`,
  to: TO,
  from: FROM,
  body: 'Your table is ready',
  statusCallbackUrl: `${receiver.base}/webhooks/twilio/status/msg_${n}`,
  ...over,
});

beforeAll(async () => {
  receiver = await startReceiver();
  sim = await startCarrierSimulator({ seed: 99, callbackDelayMs: { sent: [1, 5], final: [1, 5] } });
  carrier = adapter({ timeoutMs: 2_000 });
});

afterEach(() => sim.setFaults({}));

afterAll(async () => {
  await sim.stop();
  await receiver.close();
});

describe('send', () => {
  it('maps an accepted message: sid, status, segments as a number', async () => {
    const short = await carrier.send(request());
    expect(short).toEqual({ outcome: 'accepted', providerSid: expect.stringMatching(/^SM[0-9a-f]{32}$/), providerStatus: 'queued', segments: 1 });
    expect(await carrier.send(request({ body: 'x'.repeat(200) }))).toMatchObject({ outcome: 'accepted', segments: 2 });
    expect(await carrier.send(request({ body: 'Ünïcødé ✓'.repeat(10) }))).toMatchObject({ outcome: 'accepted', segments: 2 });
    const logged = sim.log().find((m) => short.outcome === 'accepted' && m.sid === short.providerSid);
    expect(logged).toMatchObject({ to: TO, from: FROM, body: 'Your table is ready', answer: 'answered' });
    expect(logged?.statusCallback).toMatch(/\/webhooks\/twilio\/status\/msg_\d+$/);
  });

  it('maps error answers to rejected with the Twilio code and HTTP status', async () => {
    expect(await carrier.send(request({ to: '+1' }))).toEqual({ outcome: 'rejected', errorCode: 21211, httpStatus: 400, message: expect.any(String) });
    for (const [code, status] of [
      [20429, 429],
      [20503, 503],
      [21610, 400],
    ] as const) {
      sim.setFaults({ errors: { [code]: 1 } });
      expect(await carrier.send(request())).toMatchObject({ outcome: 'rejected', errorCode: code, httpStatus: status });
    }
    const wrongToken = createTwilioCarrier({ accountSid: account().sid, authToken: 'wrong', baseUrl: sim.url });
    expect(await wrongToken.send(request())).toMatchObject({ outcome: 'rejected', errorCode: 20003, httpStatus: 401 });
  });

  it('answers unknown when the connection dies after the carrier accepted, and the log holds the message', async () => {
    sim.setFaults({ dropAfterAccept: 1 });
    const req = request({ body: 'dropped answer' });
    const outcome = await carrier.send(req);
    expect(outcome).toMatchObject({ outcome: 'unknown', reason: expect.stringContaining('ECONNRESET') });
    const logged = sim.log().filter((m) => m.body === 'dropped answer');
    expect(logged).toEqual([expect.objectContaining({ answer: 'dropped', answerDropped: true, to: TO })]);
    // How the pipeline settles it: a look-up finds the message, and its callbacks arrive.
    const found = await carrier.findMessages({ to: TO, from: FROM, since: new Date(Date.parse(logged[0]!.acceptedAt) - 1) });
    expect(found.map((m) => m.providerSid)).toContain(logged[0]!.sid);
    await until(() => receiver.received.some((r) => r.params.MessageSid === logged[0]!.sid && r.params.MessageStatus === 'delivered'));
  });

  it('answers unknown when the carrier accepts and never answers (timeout)', async () => {
    sim.setFaults({ hangAfterAccept: 1 });
    const impatient = adapter({ timeoutMs: 150 });
    const outcome = await impatient.send(request({ body: 'hung answer' }));
    expect(outcome).toMatchObject({ outcome: 'unknown', reason: expect.stringContaining('ECONNABORTED') });
    expect(sim.log().filter((m) => m.body === 'hung answer')).toEqual([expect.objectContaining({ answer: 'hung', answerDropped: true })]);
  });

  it('answers not_sent for a request that timed out still waiting for a connection', async () => {
    sim.setFaults({ hangAfterAccept: 1 });
    const oneSocket = adapter({ timeoutMs: 1_500, maxSockets: 1 });
    const [first, second] = await Promise.all([oneSocket.send(request({ body: 'holds the socket' })), oneSocket.send(request({ body: 'queued behind' }))]);
    expect(first).toMatchObject({ outcome: 'unknown' });
    // Both time out at the same instant. Usually the second is still waiting
    // for the socket then (not_sent); on a loaded machine the first's socket
    // may be handed over just before the second's timer runs, and a request
    // that got a connection is rightly unknown. Never not_sent for a message
    // the carrier has.
    expect(['not_sent', 'unknown']).toContain(second.outcome);
    if (second.outcome === 'not_sent') expect(sim.log().some((m) => m.body === 'queued behind')).toBe(false);
  });

  it('answers not_sent when the connection is refused', async () => {
    const nowhere = adapter({ baseUrl: `http://127.0.0.1:${await freePort()}` });
    expect(await nowhere.send(request())).toMatchObject({ outcome: 'not_sent', reason: expect.stringContaining('ECONNREFUSED') });
  });

  it('during an outage: rejected 503 in error mode, not_sent in refuse mode, accepted after it', async () => {
    sim.setFaults({ outages: [{ startMs: 0, endMs: sim.uptimeMs() + 60_000 }] });
    expect(await carrier.send(request())).toMatchObject({ outcome: 'rejected', errorCode: 20503, httpStatus: 503 });

    sim.setFaults({ outageMode: 'refuse', outages: [{ startMs: 0, endMs: sim.uptimeMs() + 400 }] });
    await until(() => refuses(sim.port));
    // A fresh adapter: one holding a pooled connection that the outage cut may
    // write to it before it sees the close, which is (rightly) `unknown`.
    const fresh = adapter({ timeoutMs: 1_000 });
    expect(await fresh.send(request())).toMatchObject({ outcome: 'not_sent', reason: expect.stringContaining('ECONNREFUSED') });
    await until(async () => !(await refuses(sim.port)));
    expect(await fresh.send(request())).toMatchObject({ outcome: 'accepted' });
    expect(await carrier.send(request())).toMatchObject({ outcome: 'accepted' });
  });

  it('treats a 5xx without a Twilio error body as unknown, a 2xx it cannot read as unknown', async () => {
    for (const [status, body] of [
      [502, '<html>Bad Gateway</html>'],
      [504, ''],
      [201, '{not json'],
    ] as const) {
      const raw = await startRawServer(status, body, 'text/html');
      try {
        expect(await adapter({ baseUrl: raw.url }).send(request())).toMatchObject({ outcome: 'unknown' });
      } finally {
        await raw.close();
      }
    }
  });

  it('resolves a relative StatusCallback URL against publicUrl; sends a messaging service sid as such', async () => {
    const withPublic = adapter({ publicUrl: 'https://credence.example.com' });
    const mg = `MG${'a'.repeat(32)}`;
    const outcome = await withPublic.send(request({ statusCallbackUrl: '/webhooks/twilio/status/msg_x', from: mg }));
    expect(outcome.outcome).toBe('accepted');
    expect(sim.log().at(-1)).toMatchObject({ statusCallback: 'https://credence.example.com/webhooks/twilio/status/msg_x', messagingServiceSid: mg });
  });
});

describe('look-ups and webhooks', () => {
  it('fetches a message, follows its status, and answers undefined for an unknown sid', async () => {
    sim.setFaults({ finalStatus: { undelivered: 1 } });
    const sent = await carrier.send(request({ body: 'to fetch' }));
    if (sent.outcome !== 'accepted') throw new Error(`not accepted: ${JSON.stringify(sent)}`);
    const first = await carrier.fetchMessage(sent.providerSid);
    expect(first).toMatchObject({ providerSid: sent.providerSid, to: TO, from: FROM, body: 'to fetch', segments: 1 });
    expect(first?.dateCreated).toBeInstanceOf(Date);
    const final = await until(async () => {
      const m = await carrier.fetchMessage(sent.providerSid);
      return m?.status === 'undelivered' && m;
    });
    expect(final.errorCode).toBeGreaterThanOrEqual(30003);
    expect(await carrier.fetchMessage('SM00000000000000000000000000000000')).toBeUndefined();
  });

  it('finds messages by destination, sender and time', async () => {
    const to = '+15005550777';
    await carrier.send(request({ to, body: 'old' }));
    // Twilio's dates have whole seconds: step into the next second.
    const nextSecond = Math.ceil((Date.now() + 1) / 1000) * 1000;
    await until(() => Date.now() >= nextSecond, 2_000);
    const since = new Date();
    await carrier.send(request({ to, body: 'new' }));
    await carrier.send(request({ to, from: '+15005550002', body: 'other sender' }));
    expect((await carrier.findMessages({ to, from: FROM, since })).map((m) => m.body)).toEqual(['new']);
    expect((await carrier.findMessages({ to, since })).map((m) => m.body).sort()).toEqual(['new', 'other sender']);
    expect((await carrier.findMessages({ to, since: new Date(since.getTime() - 5_000) })).map((m) => m.body)).toContain('old');
    expect(await carrier.findMessages({ to, since: new Date(Date.now() + 60_000) })).toEqual([]);
  });

  it('validates the simulator’s webhook signatures and refuses forged ones', async () => {
    const sent = await carrier.send(request({ body: 'signed' }));
    if (sent.outcome !== 'accepted') throw new Error('not accepted');
    const cb = await until(() => receiver.received.find((r) => r.params.MessageSid === sent.providerSid));
    expect(carrier.validateWebhook(cb.url, cb.params, cb.signature)).toBe(true);
    expect(carrier.validateWebhook(cb.url, { ...cb.params, MessageStatus: 'delivered', SmsStatus: 'delivered' }, cb.signature)).toBe(
      cb.params.MessageStatus === 'delivered',
    );
    expect(carrier.validateWebhook(cb.url, { ...cb.params, To: '+15550000000' }, cb.signature)).toBe(false);
    expect(carrier.validateWebhook(`${cb.url}x`, cb.params, cb.signature)).toBe(false);
    expect(carrier.validateWebhook(cb.url, cb.params, undefined)).toBe(false);
    const other = createTwilioCarrier({ accountSid: account().sid, authToken: 'another-token', baseUrl: sim.url });
    expect(other.validateWebhook(cb.url, cb.params, cb.signature)).toBe(false);
    // A relative URL is resolved against publicUrl, as the app knows only its path.
    const local = adapter({ publicUrl: receiver.base });
    expect(local.validateWebhook(new URL(cb.url).pathname, cb.params, cb.signature)).toBe(true);
  });
});

describe('classifyTransportFailure', () => {
  it('is not_sent only when nothing can have reached the carrier', () => {
    expect(classifyTransportFailure('ECONNREFUSED', true).outcome).toBe('not_sent');
    expect(classifyTransportFailure('ENOTFOUND', true).outcome).toBe('not_sent');
    expect(classifyTransportFailure('ECONNABORTED', false).outcome).toBe('not_sent');
    expect(classifyTransportFailure('ECONNABORTED', true).outcome).toBe('unknown');
    expect(classifyTransportFailure('ECONNRESET', true).outcome).toBe('unknown');
    expect(classifyTransportFailure('ETIMEDOUT', true).outcome).toBe('unknown');
    expect(classifyTransportFailure(undefined, true).outcome).toBe('unknown');
  });
});
