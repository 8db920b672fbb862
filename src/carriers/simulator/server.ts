/**
 * The simulator's HTTP routes: the slice of Twilio's REST API the adapter
 * uses (create, fetch and list Messages) and the admin API under /_sim.
 */
import type http from 'node:http';
import { decideCreate, inOutage, httpStatusForCode, parseFaultProfile } from './faults.ts';
import { createdMessage, type SimMessage, twilioError, messageResource } from './resources.ts';
import { postInbound, recordRejection, scheduleDelivery, type SimAccount, type SimState } from './state.ts';

const E164 = /^\+[1-9]\d{6,14}$/;
const CREATE = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/;
const FETCH = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\/([^/]+)\.json$/;
const MAX_BODY = 1 << 20;

function send(res: http.ServerResponse, status: number, payload: unknown): void {
  const body = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: http.ServerResponse, code: number, status = httpStatusForCode(code), message?: string): void {
  if (status === 401) res.setHeader('www-authenticate', 'Basic realm="Twilio API"');
  send(res, status, twilioError(code, status, message));
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) req.destroy(new Error('request body too large'));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The account named in the path, if the Basic credentials are its own. */
function authenticate(state: SimState, req: http.IncomingMessage, accountSid: string): SimAccount | undefined {
  const header = req.headers.authorization ?? '';
  if (!header.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const account = state.accounts.get(decoded.slice(0, colon));
  const ok = colon > 0 && account !== undefined && account.authToken === decoded.slice(colon + 1) && account.sid === accountSid;
  return ok ? account : undefined;
}

function validationError(form: URLSearchParams): number | undefined {
  const to = form.get('To');
  const statusCallback = form.get('StatusCallback');
  if (to === null || to === '') return 21604;
  if ((form.get('From') ?? '') === '' && (form.get('MessagingServiceSid') ?? '') === '') return 21603;
  if ((form.get('Body') ?? '') === '') return 21602;
  if (!E164.test(to)) return 21211;
  if (statusCallback !== null && statusCallback !== '' && !/^https?:\/\/[^/]/.test(statusCallback)) return 21609;
  return undefined;
}

async function createMessage(state: SimState, req: http.IncomingMessage, res: http.ServerResponse, account: SimAccount) {
  const form = new URLSearchParams(await readBody(req));
  if (inOutage(state.faults, state.elapsed())) {
    // Also reached in refuse mode by a request that slipped in as the listener closed.
    state.stats.outageRejected++;
    recordRejection(state, 20503, true);
    return sendError(res, 20503);
  }
  const invalid = validationError(form);
  if (invalid !== undefined) {
    recordRejection(state, invalid, false);
    return sendError(res, invalid);
  }
  const decision = decideCreate(state.faults, state.random, state.delays);
  if (decision.latencyMs > 0) await new Promise<void>((resolve) => state.later(decision.latencyMs, resolve));
  // A client that gave up during the latency is not noticed, as at a real
  // carrier: the message is still accepted, and the answer goes nowhere.
  if (decision.errorCode !== null) {
    recordRejection(state, decision.errorCode, true);
    return sendError(res, decision.errorCode);
  }
  const message: SimMessage = createdMessage({
    accountSid: account.sid,
    to: form.get('To') ?? '',
    // With only a messaging service, the service sid stands in for the sender number.
    from: form.get('From') || (form.get('MessagingServiceSid') ?? ''),
    body: form.get('Body') ?? '',
    statusCallback: form.get('StatusCallback') || null,
    messagingServiceSid: form.get('MessagingServiceSid') || null,
    finalStatus: decision.final.status,
    answer: decision.answer,
  });
  state.log.add(message);
  state.stats.accepted++;
  state.stats[decision.answer]++;
  scheduleDelivery(state, message, decision.callbacks, decision.final.errorCode);
  state.logger?.debug({ sid: message.sid, to: message.to, answer: decision.answer }, 'simulator accepted a message');
  if (decision.answer === 'dropped') {
    // The carrier took the message, then the connection died before the answer left.
    req.socket.destroy();
  } else if (decision.answer === 'hung') {
    state.hung.add(res);
    res.on('close', () => state.hung.delete(res));
  } else if (req.socket.destroyed) {
    message.answerDropped = true; // the client left during the latency
  } else {
    send(res, 201, messageResource(message));
  }
}

async function admin(state: SimState, req: http.IncomingMessage, res: http.ServerResponse, path: string) {
  const route = `${req.method} ${path}`;
  switch (route) {
    case 'GET /_sim/faults':
      return send(res, 200, state.faults);
    case 'PUT /_sim/faults': {
      let input: unknown;
      try {
        input = JSON.parse(await readBody(req));
      } catch {
        return send(res, 400, { errors: ['the body must be JSON'] });
      }
      const parsed = parseFaultProfile(input);
      if (!parsed.ok) return send(res, 400, { errors: parsed.errors });
      state.setFaults(parsed.profile);
      return send(res, 200, state.faults);
    }
    case 'GET /_sim/log':
      return send(res, 200, state.log.all());
    case 'GET /_sim/stats':
      return send(res, 200, state.stats);
    case 'GET /_sim/clock':
      // outage windows are relative to this
      return send(res, 200, { elapsedMs: Math.round(state.elapsed()) });
    case 'POST /_sim/reset':
      state.reset();
      res.writeHead(204).end();
      return;
    case 'POST /_sim/inbound': {
      let input: unknown;
      try {
        input = JSON.parse(await readBody(req));
      } catch {
        input = undefined;
      }
      const sms = typeof input === 'object' && input !== null ? (input as Record<string, unknown>) : {};
      const { from, to, body, accountSid, messageSid } = sms;
      if (typeof from !== 'string' || typeof to !== 'string' || typeof body !== 'string')
        return send(res, 400, { errors: ['expected JSON { from, to, body, accountSid?, messageSid? }'] });
      const optional = (v: unknown) => (typeof v === 'string' ? v : undefined);
      try {
        const status = await postInbound(state, { from, to, body, accountSid: optional(accountSid), messageSid: optional(messageSid) });
        return send(res, 200, { status });
      } catch (err) {
        return send(res, 502, { errors: [String(err)] });
      }
    }
    default:
      return send(res, 404, { errors: [`no simulator route ${route}`] });
  }
}

async function route(state: SimState, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://simulator');
  if (url.pathname.startsWith('/_sim/')) return admin(state, req, res, url.pathname);
  const create = CREATE.exec(url.pathname);
  const fetch = FETCH.exec(url.pathname);
  const accountSid = create?.[1] ?? fetch?.[1];
  if (accountSid === undefined) return sendError(res, 20404, 404, `The requested resource ${url.pathname} was not found`);
  if (create !== null && req.method === 'POST') state.stats.createRequests++;
  const account = authenticate(state, req, accountSid);
  if (account === undefined) {
    if (create !== null && req.method === 'POST') recordRejection(state, 20003, false);
    req.resume();
    return sendError(res, 20003);
  }
  if (create !== null && req.method === 'POST') return createMessage(state, req, res, account);
  if (create !== null && req.method === 'GET') {
    const result = state.log.page(account.sid, url.searchParams);
    return 'invalid' in result ? sendError(res, 20001, 400, result.invalid) : send(res, 200, result.page);
  }
  if (fetch !== null && req.method === 'GET') {
    const message = state.log.get(account.sid, fetch[2] ?? '');
    return message === undefined
      ? sendError(res, 20404, 404, `The requested resource ${url.pathname} was not found`)
      : send(res, 200, messageResource(message));
  }
  return sendError(res, 20004, 405, 'Method not allowed');
}

export function requestHandler(state: SimState): http.RequestListener {
  return (req, res) => {
    route(state, req, res).catch((err: unknown) => {
      // A bug or a torn connection must not take the simulator down.
      state.logger?.error({ err }, 'carrier simulator request failed');
      if (!res.headersSent && !res.destroyed) sendError(res, 20500);
      else res.destroy();
    });
  };
}
