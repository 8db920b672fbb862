/**
 * The carrier simulator: a real HTTP server that speaks the part of Twilio's
 * REST API the adapter uses, reached through the official SDK. It posts
 * signed status callbacks and inbound SMS, injects latency and faults from a
 * seeded random stream (so chaos runs replay), and keeps a log of every
 * message it accepted: the ground truth that duplicate and overdraft audits
 * compare against.
 */
import { randomBytes, randomInt } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../shared/logger.ts';
import {
  type CallbackDelays,
  createRandom,
  type FaultProfile,
  inOutage,
  NO_FAULTS,
  nextOutageBoundary,
  parseFaultProfile,
} from './faults.ts';
import { createMessageLog, emptyStats, type SimStats } from './log.ts';
import { newSid, type SimMessage } from './resources.ts';
import { requestHandler } from './server.ts';
import { type InboundSms, postInbound, type SimAccount, type SimState } from './state.ts';
import { createWebhookPoster } from './webhooks.ts';

export type { FaultProfile } from './faults.ts';
export { parseFaultProfile, httpStatusForCode, UNDELIVERED_CODES, FAILED_CODES } from './faults.ts';
export type { SimStats } from './log.ts';
export type { SimMessage, MessageStatus } from './resources.ts';
export type { SimAccount, InboundSms } from './state.ts';

export interface CarrierSimulatorOptions {
  /** Default: one account, `AC` + 32 hex digits, with a random auth token. */
  accounts?: SimAccount[];
  faults?: FaultProfile;
  /** Where inbound SMS are posted (the app's inbound webhook URL). */
  inboundUrl?: string;
  /** Seed of the random stream behind every fault decision; random if left out (see `seed` on the handle). */
  seed?: number;
  /** Delay of the `sent` callback after acceptance, and of the final one after `sent`: [min, max] ms. */
  callbackDelayMs?: { sent: [number, number]; final: [number, number] };
  /** Webhook delivery: tries per callback, first backoff (doubling), per-try timeout. */
  callbackRetry?: { attempts?: number; backoffMs?: number; timeoutMs?: number };
  /** 0 (default) picks a free port. */
  port?: number;
  log?: Logger;
}

export interface CarrierSimulator {
  /** `http://127.0.0.1:<port>`: the adapter's `baseUrl`. */
  readonly url: string;
  readonly port: number;
  readonly accounts: readonly SimAccount[];
  /** The seed in use: pass it back to replay a run. */
  readonly seed: number;
  /** Every accepted message, in acceptance order (copies). */
  log(): SimMessage[];
  stats(): SimStats;
  faults(): FaultProfile;
  /** Replace the fault profile (throws if it is invalid). Outage windows stay relative to the start. */
  setFaults(profile: FaultProfile): void;
  /** Post a signed inbound SMS to `inboundUrl`; resolves with the HTTP status the app answered. */
  sendInbound(sms: InboundSms): Promise<number>;
  /** Forget the log and the counters. */
  reset(): void;
  /** ms since start: the clock outage windows are measured on. */
  uptimeMs(): number;
  stop(): Promise<void>;
}

const DEFAULT_DELAYS: CallbackDelays = { sent: [5, 20], final: [5, 30] };
const MAX_TIMER = 2 ** 31 - 1;

function checked(profile: FaultProfile): FaultProfile {
  const parsed = parseFaultProfile(structuredClone(profile));
  if (!parsed.ok) throw new Error(`invalid fault profile: ${parsed.errors.join('; ')}`);
  return parsed.profile;
}

export async function startCarrierSimulator(options: CarrierSimulatorOptions = {}): Promise<CarrierSimulator> {
  const accounts = options.accounts ?? [{ sid: newSid('AC'), authToken: randomBytes(16).toString('hex') }];
  if (accounts.length === 0) throw new Error('the carrier simulator needs at least one account');
  const seed = options.seed ?? randomInt(2 ** 31);
  const startedAt = performance.now();
  const timers = new Set<NodeJS.Timeout>();
  const retry = options.callbackRetry ?? {};
  const poster = createWebhookPoster({
    attempts: retry.attempts ?? 4,
    backoffMs: retry.backoffMs ?? 50,
    timeoutMs: retry.timeoutMs ?? 5_000,
    onAttempt: (ok) => {
      state.stats.callbacks.attempts++;
      if (!ok) state.stats.callbacks.failedAttempts++;
    },
  });
  // Inbound messages have connections of their own: behind a backlog of
  // status callbacks they would otherwise wait their turn for a socket.
  const inboundPoster = createWebhookPoster({ attempts: 1, backoffMs: 0, timeoutMs: retry.timeoutMs ?? 5_000 });
  let stopped = false;
  let listening = false;
  let boundaryTimer: NodeJS.Timeout | undefined;
  const server = http.createServer({ keepAliveTimeout: 5_000 });

  const state: SimState = {
    accounts: new Map(accounts.map((a) => [a.sid, a])),
    defaultAccount: accounts[0]!,
    faults: checked(options.faults ?? NO_FAULTS),
    random: createRandom(seed),
    delays: options.callbackDelayMs ?? DEFAULT_DELAYS,
    log: createMessageLog(),
    stats: emptyStats(),
    poster,
    inboundPoster,
    inboundUrl: options.inboundUrl,
    logger: options.log,
    hung: new Set(),
    elapsed: () => performance.now() - startedAt,
    later(ms, fn) {
      if (stopped) return;
      const t = setTimeout(() => {
        timers.delete(t);
        fn();
      }, ms);
      timers.add(t);
    },
    setFaults(profile) {
      state.faults = checked(profile);
      syncOutage();
    },
    sendInbound: (sms) => postInbound(state, sms),
    reset() {
      state.log.clear();
      state.stats = emptyStats();
    },
  };
  server.on('request', requestHandler(state));
  server.on('clientError', (_err, socket) => socket.destroy());

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        listening = true;
        resolve();
      });
    });

  // In `refuse` mode an outage closes the listening socket (and every open
  // connection), so new connections are refused as by a carrier that is down.
  function syncOutage() {
    clearTimeout(boundaryTimer);
    if (stopped) return;
    const elapsed = state.elapsed();
    const refuse = state.faults.outageMode === 'refuse' && inOutage(state.faults, elapsed);
    if (refuse && listening) {
      listening = false;
      server.close();
      server.closeAllConnections();
      options.log?.info({ port }, 'carrier simulator outage: refusing connections');
    } else if (!refuse && !listening) {
      listen(port).catch((err: unknown) => options.log?.error({ err, port }, 'carrier simulator could not listen again'));
    }
    const next = state.faults.outageMode === 'refuse' ? nextOutageBoundary(state.faults, elapsed) : undefined;
    if (next !== undefined) boundaryTimer = setTimeout(syncOutage, Math.min(MAX_TIMER, Math.ceil(next - elapsed) + 1));
  }

  await listen(options.port ?? 0);
  const port = (server.address() as AddressInfo).port;
  syncOutage();
  options.log?.info({ port, seed }, 'carrier simulator started');

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    accounts,
    seed,
    log: () => state.log.all(),
    stats: () => structuredClone(state.stats),
    faults: () => structuredClone(state.faults),
    setFaults: (profile) => state.setFaults(profile),
    sendInbound: (sms) => postInbound(state, sms),
    reset: () => state.reset(),
    uptimeMs: () => state.elapsed(),
    async stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(boundaryTimer);
      for (const t of timers) clearTimeout(t);
      timers.clear();
      poster.close();
      inboundPoster.close();
      for (const res of state.hung) res.destroy();
      if (listening) {
        listening = false;
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
      } else server.closeAllConnections();
    },
  };
}
