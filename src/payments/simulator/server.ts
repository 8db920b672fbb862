/**
 * The simulator's HTTP layer: the Stripe API under /v1 (Bearer auth with
 * the secret key, form bodies, idempotency keys replayed as Stripe replays
 * them), the hosted checkout page under /pay, the admin API under /_sim.
 */
import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import type { Logger } from '../../shared/logger.ts';
import { admin } from './admin.ts';
import { type ApiAnswer, callApi } from './api.ts';
import { parseForm } from './form.ts';
import { hostedPage } from './page.ts';
import { API_VERSION, StripeSimError } from './resources.ts';
import type { Deliverer } from './webhooks.ts';
import type { World } from './world.ts';

const MAX_BODY = 1 << 20;

export interface ServerState {
  world: World;
  deliverer: Deliverer;
  secretKey: string;
  logger: Logger | undefined;
}

function send(res: http.ServerResponse, status: number, payload: unknown, headers: Record<string, string> = {}): void {
  if (payload === undefined) {
    res.writeHead(status, headers).end();
    return;
  }
  const body = JSON.stringify(payload, null, 2);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
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

/** Stripe takes the secret key as a Bearer token, or as the Basic user name. */
function keyOf(req: http.IncomingMessage): string | undefined {
  const header = req.headers.authorization ?? '';
  if (header.startsWith('Bearer ')) return header.slice(7).trim();
  if (header.startsWith('Basic ')) return Buffer.from(header.slice(6), 'base64').toString('utf8').split(':')[0];
  return undefined;
}

const masked = (key: string) => `${key.slice(0, 8)}${'*'.repeat(Math.max(0, key.length - 12))}${key.slice(-4)}`;

function unauthorized(key: string | undefined): StripeSimError {
  const message =
    key === undefined || key === ''
      ? "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
      : `Invalid API Key provided: ${masked(key)}`;
  return new StripeSimError(401, undefined, message);
}

interface Saved {
  fingerprint: string;
  answer: ApiAnswer;
}

export function requestHandler(state: ServerState): http.RequestListener {
  /** Idempotency-Key → the first answer, replayed to a retry with the same parameters. */
  const saved = new Map<string, Saved>();

  async function api(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    const method = req.method ?? 'GET';
    const headers = { 'request-id': `req_${randomBytes(7).toString('hex')}`, 'stripe-version': String(req.headers['stripe-version'] ?? API_VERSION) };
    const key = keyOf(req);
    if (key !== state.secretKey) {
      req.resume();
      return send(res, 401, unauthorized(key).body(), { ...headers, 'www-authenticate': 'Bearer realm="Stripe"' });
    }
    const text = method === 'GET' || method === 'DELETE' ? url.search.slice(1) : await readBody(req);
    const idempotencyKey = method === 'POST' ? req.headers['idempotency-key'] : undefined;
    const fingerprint = `${method} ${url.pathname} ${text}`;
    if (typeof idempotencyKey === 'string') {
      const earlier = saved.get(idempotencyKey);
      if (earlier !== undefined && earlier.fingerprint !== fingerprint) {
        const err = new StripeSimError(
          400,
          undefined,
          `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`,
          undefined,
          'idempotency_error',
        );
        return send(res, 400, err.body(), headers);
      }
      if (earlier !== undefined) return send(res, earlier.answer.status, earlier.answer.body, { ...headers, 'idempotent-replayed': 'true' });
    }
    const parsed = parseForm(text);
    const answer: ApiAnswer = parsed.ok
      ? callApi(state.world, method, url.pathname, parsed.form)
      : { status: 400, body: new StripeSimError(400, 'parameter_invalid', `Invalid parameter name: ${parsed.key}`, parsed.key).body() };
    // Only a success is kept: a refusal changed nothing, so a retry may run again.
    if (typeof idempotencyKey === 'string' && answer.status === 200) saved.set(idempotencyKey, { fingerprint, answer });
    state.logger?.debug({ method, path: url.pathname, status: answer.status }, 'payments simulator request');
    send(res, answer.status, answer.body, headers);
  }

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://simulator');
    const path = url.pathname;
    if (path.startsWith('/v1/')) return api(req, res, url);
    if (path.startsWith('/pay/')) return hostedPage(state.world, req, res, path);
    if (path.startsWith('/_sim/')) {
      const answer = await admin(state.world, state.deliverer, req.method ?? 'GET', path, await readBody(req));
      return send(res, answer.status, answer.body);
    }
    req.resume();
    send(res, 404, new StripeSimError(404, undefined, `Unrecognized request URL (${req.method}: ${path}).`).body());
  }

  return (req, res) => {
    route(req, res).catch((err: unknown) => {
      // A bug or a torn connection must not take the simulator down.
      state.logger?.error({ err }, 'payments simulator request failed');
      if (!res.headersSent && !res.destroyed) send(res, 500, new StripeSimError(500, undefined, 'An unknown error occurred', undefined, 'api_error').body());
      else res.destroy();
    });
  };
}
