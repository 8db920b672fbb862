/**
 * Delivering events the way Stripe does: the JSON envelope POSTed to the
 * endpoint with `Stripe-Signature: t=…,v1=…`, retried on a non-2xx answer
 * or a transport error. On request it also delivers an event twice (same
 * id) or late by a random delay, so events can overtake one another.
 * A failed delivery never throws into the simulator.
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { StripeEvent } from './resources.ts';

export interface DeliveryFaults {
  /** Probability that an event is delivered twice, with the same id. */
  duplicateRate?: number;
  /** Each delivery waits a random 0..window ms first, so later events can arrive earlier. 0: in order, one at a time. */
  reorderWindowMs?: number;
}

export interface DeliveryRecord {
  eventId: string;
  type: string;
  /** 1 for the first try of a copy; retries count up. */
  attempt: number;
  /** The HTTP status the endpoint answered, or null when the connection failed. */
  status: number | null;
  at: string;
}

export interface RetryPolicy {
  attempts: number;
  /** First retry delay; doubles each time. */
  backoffMs: number;
  timeoutMs: number;
}

/** The header `stripe.webhooks.constructEvent` checks: HMAC-SHA256 of `<t>.<payload>` with the endpoint secret. */
export function signatureHeader(secret: string, payload: string, timestamp: number): string {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${payload}`, 'utf8').digest('hex');
  return `t=${timestamp},v1=${v1}`;
}

export function checkDeliveryFaults(d: DeliveryFaults): DeliveryFaults {
  const { duplicateRate, reorderWindowMs } = d;
  if (duplicateRate !== undefined && !(typeof duplicateRate === 'number' && duplicateRate >= 0 && duplicateRate <= 1))
    throw new Error('duplicateRate must be a probability in [0, 1]');
  if (reorderWindowMs !== undefined && !(typeof reorderWindowMs === 'number' && Number.isFinite(reorderWindowMs) && reorderWindowMs >= 0))
    throw new Error('reorderWindowMs must be a number of ms >= 0');
  return { duplicateRate: duplicateRate ?? 0, reorderWindowMs: reorderWindowMs ?? 0 };
}

export interface Deliverer {
  /** Queue an event for the current endpoint; without an endpoint it is only kept in the event list. */
  enqueue(event: StripeEvent): void;
  setUrl(url: string | undefined): void;
  url(): string | undefined;
  setFaults(d: DeliveryFaults): void;
  faults(): DeliveryFaults;
  /** Resolves once every queued delivery has got through or been given up. */
  flush(): Promise<void>;
  records(): DeliveryRecord[];
  close(): void;
}

export function createDeliverer(options: {
  url: string | undefined;
  secret: () => string;
  faults: DeliveryFaults;
  retry: RetryPolicy;
  random: () => number;
}): Deliverer {
  const agents = { http: new http.Agent({ keepAlive: true, maxSockets: 32 }), https: new https.Agent({ keepAlive: true, maxSockets: 32 }) };
  const sleeping = new Map<NodeJS.Timeout, () => void>();
  const pending = new Set<Promise<void>>();
  const records: DeliveryRecord[] = [];
  let url = options.url;
  let faults = checkDeliveryFaults(options.faults);
  let chain = Promise.resolve();
  let closed = false;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (closed || ms <= 0) return resolve();
      const t = setTimeout(() => {
        sleeping.delete(t);
        resolve();
      }, ms);
      sleeping.set(t, resolve);
    });

  const post = (target: string, payload: string) =>
    new Promise<number>((resolve, reject) => {
      const u = new URL(target);
      const secure = u.protocol === 'https:';
      const req = (secure ? https : http).request(u, {
        method: 'POST',
        agent: secure ? agents.https : agents.http,
        timeout: options.retry.timeoutMs,
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(payload),
          'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
          // Signed afresh on every try, as Stripe does, so a retry is never outside the tolerance window.
          'stripe-signature': signatureHeader(options.secret(), payload, Math.floor(Date.now() / 1000)),
        },
      });
      req.on('timeout', () => req.destroy(new Error('webhook delivery timed out')));
      req.on('error', reject);
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      });
      req.end(payload);
    });

  async function deliver(target: string, event: StripeEvent, payload: string): Promise<void> {
    for (let attempt = 1; attempt <= options.retry.attempts && !closed; attempt++) {
      if (attempt > 1) await sleep(options.retry.backoffMs * 2 ** (attempt - 2));
      if (closed) return;
      let status: number | null = null;
      try {
        status = await post(target, payload);
      } catch {
        status = null;
      }
      records.push({ eventId: event.id, type: event.type, attempt, status, at: new Date().toISOString() });
      if (status !== null && status >= 200 && status < 300) return;
    }
  }

  const track = (p: Promise<void>) => {
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };

  return {
    enqueue(event) {
      // Three draws per event whatever is decided, so a seed replays the same faults.
      const [dup = 0, d1 = 0, d2 = 0] = [options.random(), options.random(), options.random()];
      const target = url;
      if (target === undefined || closed) return;
      const payload = JSON.stringify(event, null, 2);
      const copies = dup < (faults.duplicateRate ?? 0) ? [d1, d2] : [d1];
      const window = faults.reorderWindowMs ?? 0;
      for (const u of copies) {
        if (window > 0) {
          track(sleep(Math.floor(u * window)).then(() => deliver(target, event, payload)));
        } else {
          // In order: each delivery (with its retries) waits for the one queued before it.
          chain = chain.then(() => deliver(target, event, payload));
          track(chain);
        }
      }
    },
    setUrl(u) {
      url = u;
    },
    url: () => url,
    setFaults(d) {
      faults = checkDeliveryFaults({ ...faults, ...d });
    },
    faults: () => ({ ...faults }),
    async flush() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
    records: () => records.map((r) => ({ ...r })),
    close() {
      closed = true;
      for (const [t, resolve] of sleeping) {
        clearTimeout(t);
        resolve();
      }
      sleeping.clear();
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}
