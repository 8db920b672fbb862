/**
 * The carrier path's ceiling: messages per second straight through the
 * Twilio adapter (official SDK, keep-alive HTTP) into the carrier simulator,
 * with no database. Send and campaign benchmarks compare against it to tell
 * whether the carrier hop or our own code is the limit.
 *
 *   node --import tsx bench/carrier-ceiling.ts [count] [concurrency]
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { createTwilioCarrier } from '../src/carriers/twilio.ts';
import { startCarrierSimulator } from '../src/carriers/simulator/index.ts';

export interface CeilingOptions {
  /** A running simulator; one is started (latency 0–5 ms, no faults) when left out. */
  simulatorUrl?: string;
  /** Credentials for `simulatorUrl`. */
  accountSid?: string;
  authToken?: string;
  count: number;
  concurrency: number;
}

/** Status callbacks need somewhere to go: a sink that answers 204, as the app would. */
async function callbackSink(): Promise<{ url: string; received(): number; close(): Promise<void> }> {
  let received = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received++;
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/status`,
    received: () => received,
    close: () => new Promise<void>((r) => server.close(() => r()).closeAllConnections()),
  };
}

/**
 * The ceiling once before the pipeline runs (then the simulator's log and
 * counters are reset) and once after: the machine's state moves it (after a
 * long run PostgreSQL may still be checkpointing and vacuuming), so the
 * higher of the two is the one the ratio uses, the stricter comparison.
 */
export async function ceilingBefore(options: CeilingOptions & { simulatorUrl: string }): Promise<number> {
  const before = await measureCarrierCeiling(options);
  const res = await fetch(`${options.simulatorUrl}/_sim/reset`, { method: 'POST' });
  if (!res.ok) throw new Error(`simulator reset: ${res.status}`);
  return before;
}

/** Messages per second accepted through the adapter at the given concurrency. */
export async function measureCarrierCeiling(options: CeilingOptions): Promise<number> {
  const { count, concurrency } = options;
  const sink = await callbackSink();
  const sim =
    options.simulatorUrl === undefined ? await startCarrierSimulator({ faults: { latencyMs: { min: 0, max: 5 } } }) : undefined;
  const accountSid = sim?.accounts[0]?.sid ?? options.accountSid;
  const authToken = sim?.accounts[0]?.authToken ?? options.authToken;
  if (accountSid === undefined || authToken === undefined) throw new Error('simulatorUrl needs accountSid and authToken');
  const carrier = createTwilioCarrier({
    accountSid,
    authToken,
    baseUrl: sim?.url ?? options.simulatorUrl,
    maxSockets: concurrency,
  });
  try {
    let next = 0;
    let failed = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        const outcome = await carrier.send({
          messageId: `bench_${i}`,
          to: `+1555${String(1_000_000 + (i % 9_000_000)).padStart(7, '0')}`,
          from: '+15005550001',
          body: `Bench message ${i}`,
          statusCallbackUrl: `${sink.url}/${i}`,
        });
        if (outcome.outcome !== 'accepted') failed++;
      }
    };
    const t = performance.now();
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
    const ms = performance.now() - t;
    if (failed > 0) throw new Error(`${failed} of ${count} sends were not accepted`);
    return Math.round((count / ms) * 1000);
  } finally {
    // The simulator posts two status callbacks per message, some after the
    // last send: wait for them all (at most 30 s), so that none is left to
    // fail against a closed sink, and retried, while the pipeline is measured.
    const sent = Date.now();
    let atHalfSecond: number | undefined;
    while (sink.received() < 2 * count && Date.now() < sent + 30_000) {
      await new Promise((r) => setTimeout(r, 50));
      if (atHalfSecond === undefined && Date.now() >= sent + 500) atHalfSecond = sink.received();
    }
    process.stdout.write(
      `ceiling: ${sink.received()} of ${2 * count} status callbacks received ${Date.now() - sent} ms after the last send` +
        `${atHalfSecond === undefined ? '' : ` (${atHalfSecond} after 500 ms)`}\n`,
    );
    await sim?.stop();
    await sink.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const count = Number(process.argv[2] ?? 5_000);
  const concurrency = Number(process.argv[3] ?? 50);
  const rate = await measureCarrierCeiling({ count, concurrency });
  process.stdout.write(`carrier ceiling: ${count} sends at concurrency ${concurrency} = ${rate}/s\n`);
}
