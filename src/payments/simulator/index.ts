/**
 * The payments simulator: a real HTTP server that speaks the part of
 * Stripe's API Credence uses (Checkout, customers, products, subscriptions
 * and their items' prices, charges, refunds, invoices, events), reached
 * through the official SDK's
 * `host`/`port`/`protocol` options. It serves a hosted checkout page,
 * POSTs signed webhooks that `stripe.webhooks.constructEvent` accepts,
 * and can deliver them twice or out of order from a seeded random stream.
 * What a buyer, a bank or time does is a method here and a /_sim endpoint.
 */
import { randomBytes, randomInt } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../../shared/logger.ts';
import { createRandom, type StripeEvent } from './resources.ts';
import { requestHandler } from './server.ts';
import { createDeliverer, type DeliveryFaults, type DeliveryRecord } from './webhooks.ts';
import { createWorld } from './world.ts';

export type { StripeEvent } from './resources.ts';
export { API_VERSION, MONTH, StripeSimError } from './resources.ts';
export type { DeliveryFaults, DeliveryRecord } from './webhooks.ts';
export { signatureHeader } from './webhooks.ts';

export interface PaymentsSimulatorOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Where events are POSTed (Credence's /webhooks/stripe); may be set later. Events before that are not delivered. */
  webhookUrl?: string;
  /** The API key the SDK must send; default a generated `sk_test_…`. */
  secretKey?: string;
  /** The `whsec_…` webhook signing secret; default generated. */
  webhookSecret?: string;
  /** Seed of the random streams behind ids and delivery faults; random if left out (see `seed` on the handle). */
  seed?: number;
  delivery?: DeliveryFaults;
  /** Webhook delivery: tries per event (default 3), first backoff in ms (default 50, doubling), per-try timeout (default 5000). */
  retry?: { attempts?: number; backoffMs?: number; timeoutMs?: number };
  log?: Logger;
}

export interface PaymentsSimulator {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly secretKey: string;
  readonly webhookSecret: string;
  /** The seed in use: pass it back to replay a run. */
  readonly seed: number;
  setWebhookUrl(url: string | undefined): void;
  setDelivery(d: DeliveryFaults): void;
  /** A buyer completes checkout. `delayed`: completed with payment_status 'unpaid', settled later by `settleDelayed`. */
  pay(sessionId: string, options?: { delayed?: boolean }): Promise<void>;
  /** A delayed payment arrives: `checkout.session.async_payment_succeeded`. */
  settleDelayed(sessionId: string): Promise<void>;
  /** A delayed payment bounces: `checkout.session.async_payment_failed`. */
  failDelayed(sessionId: string): Promise<void>;
  /** The buyer walks away: the session expires (`checkout.session.expired`), nothing is paid. */
  decline(sessionId: string): Promise<void>;
  /** Partial or full (the rest of the charge when `amount` is left out): `charge.refunded` with the cumulative `amount_refunded`. */
  refund(chargeId: string, amount?: number): Promise<void>;
  /** `charge.dispute.created`; resolves with the dispute id. */
  dispute(chargeId: string): Promise<string>;
  /** `charge.dispute.closed` with status won or lost. */
  closeDispute(disputeId: string, outcome: 'won' | 'lost'): Promise<void>;
  /**
   * A month (30 days) passes on the simulated clock: every subscription not
   * canceled enters its next period with a paid invoice (`invoice.paid`), or a
   * failed one when `failNextRenewal` was set (`invoice.payment_failed`, status
   * past_due), each with `customer.subscription.updated`; one set to cancel at
   * the period's end is deleted instead.
   */
  advanceClock(): Promise<void>;
  failNextRenewal(subscriptionId: string): void;
  /** Cancel now: `customer.subscription.deleted` (status canceled). */
  cancelSubscription(subscriptionId: string): Promise<void>;
  /** Every event generated, in order (copies). */
  events(): StripeEvent[];
  /** Every delivery attempt, in the order they finished. */
  deliveries(): DeliveryRecord[];
  /** Resolves when every queued delivery got through or was given up. */
  flush(): Promise<void>;
  /** Unix seconds on the simulated clock. */
  now(): number;
  stop(): Promise<void>;
}

export async function startPaymentsSimulator(options: PaymentsSimulatorOptions = {}): Promise<PaymentsSimulator> {
  const seed = options.seed ?? randomInt(2 ** 31);
  const host = options.host ?? '127.0.0.1';
  const secretKey = options.secretKey ?? `sk_test_${randomBytes(24).toString('base64url')}`;
  const webhookSecret = options.webhookSecret ?? `whsec_${randomBytes(24).toString('base64url')}`;
  const deliverer = createDeliverer({
    url: options.webhookUrl,
    secret: () => webhookSecret,
    faults: options.delivery ?? {},
    retry: { attempts: options.retry?.attempts ?? 3, backoffMs: options.retry?.backoffMs ?? 50, timeoutMs: options.retry?.timeoutMs ?? 5_000 },
    // A stream of its own, so a change in delivery faults never shifts the ids.
    random: createRandom(seed ^ 0x5bd1e995),
  });

  const server = http.createServer({ keepAliveTimeout: 5_000 });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const world = createWorld({ baseUrl: url, random: createRandom(seed), onEvent: (e) => deliverer.enqueue(e) });
  server.on('request', requestHandler({ world, deliverer, secretKey, logger: options.log }));
  options.log?.info({ port, seed }, 'payments simulator started');

  let stopped = false;
  return {
    url,
    host,
    port,
    secretKey,
    webhookSecret,
    seed,
    setWebhookUrl: (u) => deliverer.setUrl(u),
    setDelivery: (d) => deliverer.setFaults(d),
    pay: async (id, o) => world.pay(id, o?.delayed === true),
    settleDelayed: async (id) => world.settle(id, 'succeeded'),
    failDelayed: async (id) => world.settle(id, 'failed'),
    decline: async (id) => void world.expire(id),
    refund: async (chargeId, amount) => void world.refund({ charge: chargeId, amount }),
    dispute: async (chargeId) => world.dispute(chargeId).id,
    closeDispute: async (id, outcome) => void world.closeDispute(id, outcome),
    advanceClock: async () => world.advanceClock(),
    failNextRenewal: (id) => world.failNextRenewal(id),
    cancelSubscription: async (id) => void world.cancelSubscription(id),
    events: () => world.events(),
    deliveries: () => deliverer.records(),
    flush: () => deliverer.flush(),
    now: () => world.now(),
    async stop() {
      if (stopped) return;
      stopped = true;
      deliverer.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
