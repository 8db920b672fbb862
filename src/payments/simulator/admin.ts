/**
 * The admin API under /_sim: what a buyer, a bank or time does, for tests
 * and chaos runs driven from another process. JSON in and out; refusals
 * use Stripe's error shape, like the REST API.
 */
import { invalid, StripeSimError } from './resources.ts';
import type { Deliverer, DeliveryFaults } from './webhooks.ts';
import type { World } from './world.ts';

export interface AdminAnswer {
  status: number;
  body?: unknown;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function json(text: string): Record<string, unknown> {
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new StripeSimError(400, undefined, 'The body must be JSON.');
  }
  if (!isRecord(value)) throw new StripeSimError(400, undefined, 'The body must be a JSON object.');
  return value;
}

const ACTION = /^\/_sim\/(sessions|charges|disputes|subscriptions)\/([^/]+)\/([a-z-]+)$/;

export async function admin(world: World, deliverer: Deliverer, method: string, path: string, text: string): Promise<AdminAnswer> {
  try {
    const body = json(text);
    const action = ACTION.exec(path);
    if (action !== null && method === 'POST') {
      const [, kind, rawId = '', verb] = action;
      const id = decodeURIComponent(rawId);
      const done = (value: unknown): AdminAnswer => ({ status: 200, body: structuredClone(value) });
      switch (`${kind}/${verb}`) {
        case 'sessions/pay':
          if (body.delayed !== undefined && typeof body.delayed !== 'boolean') throw invalid('delayed', 'delayed must be a boolean');
          world.pay(id, body.delayed === true);
          return done(world.store.sessions.get(id));
        case 'sessions/settle':
          world.settle(id, 'succeeded');
          return done(world.store.sessions.get(id));
        case 'sessions/fail':
          world.settle(id, 'failed');
          return done(world.store.sessions.get(id));
        case 'sessions/decline':
          return done(world.expire(id));
        case 'charges/refund': {
          const amount = body.amount;
          if (amount !== undefined && typeof amount !== 'number') throw invalid('amount', 'amount must be an integer');
          return done(world.refund({ charge: id, amount }));
        }
        case 'charges/dispute':
          return done(world.dispute(id));
        case 'disputes/close':
          if (body.outcome !== 'won' && body.outcome !== 'lost') throw invalid('outcome', "outcome must be 'won' or 'lost'");
          return done(world.closeDispute(id, body.outcome));
        case 'subscriptions/fail-next-renewal':
          world.failNextRenewal(id);
          return { status: 204 };
        case 'subscriptions/cancel':
          return done(world.cancelSubscription(id));
      }
    }
    switch (`${method} ${path}`) {
      case 'POST /_sim/clock/advance':
        world.advanceClock();
        return { status: 200, body: { now: world.now() } };
      case 'GET /_sim/clock':
        return { status: 200, body: { now: world.now() } };
      case 'GET /_sim/events':
        return { status: 200, body: world.events() };
      case 'GET /_sim/deliveries':
        return { status: 200, body: deliverer.records() };
      case 'POST /_sim/flush':
        await deliverer.flush();
        return { status: 204 };
      case 'GET /_sim/delivery':
        return { status: 200, body: deliverer.faults() };
      case 'PUT /_sim/delivery':
        for (const key of Object.keys(body))
          if (key !== 'duplicateRate' && key !== 'reorderWindowMs') throw new StripeSimError(400, 'parameter_unknown', `Unknown field ${key}`, key);
        try {
          deliverer.setFaults(body as DeliveryFaults);
        } catch (err) {
          throw new StripeSimError(400, 'parameter_invalid', (err as Error).message);
        }
        return { status: 200, body: deliverer.faults() };
      case 'GET /_sim/webhook-url':
        return { status: 200, body: { url: deliverer.url() ?? null } };
      case 'PUT /_sim/webhook-url': {
        const url = body.url;
        if (url !== null && (typeof url !== 'string' || !/^https?:\/\/[^/\s]/.test(url))) throw invalid('url', 'url must be an http(s) URL or null');
        deliverer.setUrl(url ?? undefined);
        return { status: 200, body: { url: deliverer.url() ?? null } };
      }
    }
    throw new StripeSimError(404, undefined, `No simulator route ${method} ${path}`);
  } catch (err) {
    if (err instanceof StripeSimError) return { status: err.status, body: err.body() };
    throw err;
  }
}
