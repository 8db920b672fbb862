/**
 * npm run bench:send — 20,000 API messages through the whole pipeline to the
 * carrier simulator (latency 0–5 ms, no faults): `credence api` and
 * `credence worker` as separate processes on an embedded, durable
 * PostgreSQL, the simulator in its own process, load from this one. Then, in
 * the same run, the carrier ceiling: the same simulator straight through the
 * adapter, no database.
 */
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import { killAllSpawned } from '../test/helpers/process.ts';
import { ceilingBefore, measureCarrierCeiling } from './carrier-ceiling.ts';
import { benchDatabase, cpuSnapshot, messageTrail, printCallbackStats, printCpu, printLoggedProblems, printStatementStats } from './harness.ts';
import { startBenchStack } from './stack.ts';

const COUNT = Number(process.env.BENCH_SEND_MESSAGES ?? 20_000);
const CONCURRENCY = Number(process.env.BENCH_SEND_CONCURRENCY ?? 64);
// BENCH_SEND_RATE=<messages/s>: post at this steady pace (still at most CONCURRENCY at
// once) instead of as fast as the API answers, to see the latency below saturation
const RATE = process.env.BENCH_SEND_RATE === undefined ? undefined : Number(process.env.BENCH_SEND_RATE);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void killAllSpawned().finally(() => process.exit(130)));
}

const home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-bench-send-'));
const database = await benchDatabase(4);
try {
  const { apiUrl, simUrl, account, sim, api, worker, orgKey, workspaceId, wsKey, call } = await startBenchStack(home, database.url, COUNT * 2);
  // 20,000 transactional messages in a minute: lift the default 100/hour safety cap.
  await call('PATCH', `/v1/workspaces/${workspaceId}/sending-rules`, orgKey, { hourly_cap: null });

  // The load generator: plain node:http with keep-alive (lighter than fetch, so
  // more of the two cores go to Credence itself).
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const postMessage = (payload: string) =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        `${apiUrl}/v1/messages`,
        { method: 'POST', agent, headers: { authorization: `Bearer ${wsKey}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 202 ? resolve() : reject(new Error(`POST /v1/messages: ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  process.stdout.write(`carrier ceiling before the run (${COUNT} sends straight to the simulator)…\n`);
  const before = await ceilingBefore({ simulatorUrl: simUrl, accountSid: account.sid, authToken: account.authToken, count: COUNT, concurrency: 50 });
  process.stdout.write(`pushing ${COUNT} messages through the API with ${CONCURRENCY} concurrent clients…\n`);
  const cpu0 = await cpuSnapshot();
  const t0 = Date.now();
  const start = performance.now();
  let next = 0;
  // when each request left the client (wall clock, ms): the latency a caller
  // sees includes any wait of the API's flow control before its 202
  const requested = new Map<string, number>();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < COUNT) {
        const i = next++;
        if (RATE !== undefined) {
          const wait = start + (i * 1000) / RATE - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        }
        requested.set(`bench ${i}`, Date.now());
        await postMessage(JSON.stringify({ to: `+1415555${String(1000 + (i % 9000)).padStart(4, '0')}`, body: `bench ${i}`, purpose: 'transactional' }));
      }
    }),
  );
  const intakeMs = performance.now() - start;
  process.stdout.write(`intake: ${COUNT} accepted in ${(intakeMs / 1000).toFixed(1)} s (${Math.round((COUNT / intakeMs) * 1000)}/s)\n`);

  type SimEntry = { body: string; acceptedAt: string };
  let log: SimEntry[] = [];
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    const stats = (await (await fetch(`${simUrl}/_sim/stats`)).json()) as { accepted: number };
    if (stats.accepted >= COUNT) break;
    if (Date.now() > deadline) throw new Error(`only ${stats.accepted} of ${COUNT} reached the carrier`);
    await new Promise((r) => setTimeout(r, 200));
  }
  log = (await (await fetch(`${simUrl}/_sim/log`)).json()) as SimEntry[];
  const accepted = new Map(log.filter((m) => m.body.startsWith('bench ')).map((m) => [m.body, Date.parse(m.acceptedAt)]));
  const lastAccepted = Math.max(...accepted.values());
  const throughput = Math.round((COUNT / (lastAccepted - t0)) * 1000);

  const { rows } = await sql<{ id: string; body: string; created_at: Date }>`select id, body, created_at from messages where body like 'bench %'`.execute(database.db);
  // accept → carrier, per message (NaN: not at the carrier)
  const perMessage = rows.map((r) => ({ id: r.id, body: r.body, ms: (accepted.get(r.body) ?? Number.NaN) - r.created_at.getTime() }));
  const latencies = perMessage.map((r) => r.ms).filter(Number.isFinite).sort((a, b) => a - b);
  const duplicates = log.length - new Set(log.map((m) => m.body)).size;
  // Stragglers: messages that took far longer than the rest show the path they took.
  const slow = perMessage.filter((r) => r.ms > 10_000).sort((a, b) => b.ms - a.ms);
  if (slow.length > 0) {
    process.stdout.write(`stragglers: ${slow.length} messages took over 10 s; the slowest:\n`);
    for (const r of slow.slice(0, 3)) {
      process.stdout.write(`  ${r.body}: ${(r.ms / 1000).toFixed(1)} s: ${await messageTrail(database.db, r.id)}\n`);
    }
  }
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  // Where the time goes: accept → queued (dispatch: credits reserved, send
  // job added), queued → sending (the job picked up and the claim's
  // transaction begun), sending → carrier (the claim's transaction, the
  // carrier call). Event times are their transactions' start (now()).
  const { rows: stages } = await sql<{ body: string; created: Date; queued: Date | null; sending: Date | null }>`
    select m.body, m.created_at as created,
      (select min(e.at) from message_events e where e.message_id = m.id and e.to_status = 'queued') as queued,
      (select min(e.at) from message_events e where e.message_id = m.id and e.to_status = 'sending') as sending
    from messages m where m.body like 'bench %'`.execute(database.db);
  const stage = (name: string, ms: number[]) => {
    const sorted = ms.filter(Number.isFinite).sort((a, b) => a - b);
    return `${name} p50=${Math.round(percentile(sorted, 50))} p99=${Math.round(percentile(sorted, 99))}`;
  };
  const fromRequest = [...requested].map(([body, at]) => (accepted.get(body) ?? Number.NaN) - at);
  process.stdout.write(`${stage('request→carrier (ms, the client\'s view)', fromRequest)}\n`);
  process.stdout.write(
    `stages (ms): ${[
      stage('accept→queued', stages.map((r) => (r.queued?.getTime() ?? Number.NaN) - r.created.getTime())),
      stage('queued→sending', stages.map((r) => (r.sending?.getTime() ?? Number.NaN) - (r.queued?.getTime() ?? Number.NaN))),
      stage('sending→carrier', stages.map((r) => (accepted.get(r.body) ?? Number.NaN) - (r.sending?.getTime() ?? Number.NaN))),
    ].join('; ')}\n`,
  );
  printCpu(cpu0, await cpuSnapshot(), COUNT);
  await printStatementStats(database.db, COUNT);
  await printCallbackStats(simUrl);
  process.stdout.write(`pipeline: ${COUNT} at the carrier ${((lastAccepted - t0) / 1000).toFixed(1)} s after the first request; duplicates=${duplicates}\n`);

  worker.child.kill('SIGTERM');
  api.child.kill('SIGTERM');
  await Promise.all([worker.exited, api.exited]);
  printLoggedProblems('worker', worker.output());
  printLoggedProblems('api', api.output());

  const after = await measureCarrierCeiling({ simulatorUrl: simUrl, accountSid: account.sid, authToken: account.authToken, count: COUNT, concurrency: 50 });
  const ceiling = Math.max(before, after);
  process.stdout.write(`ceiling: before=${before} after=${after}; the ratio uses the higher\n`);
  sim.child.kill('SIGTERM');
  await sim.exited;
  process.stdout.write(
    `send: throughput=${throughput} p50_ms=${Math.round(p50)} p99_ms=${Math.round(p99)} ceiling=${ceiling} ratio=${(throughput / ceiling).toFixed(2)}\n`,
  );
} finally {
  await killAllSpawned();
  await database.close();
  await fs.rm(home, { recursive: true, force: true });
}
