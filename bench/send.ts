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
import { freePort } from '../test/helpers/ports.ts';
import { killAllSpawned, spawnCredence } from '../test/helpers/process.ts';
import { measureCarrierCeiling } from './carrier-ceiling.ts';
import { benchDatabase } from './harness.ts';

const COUNT = Number(process.env.BENCH_SEND_MESSAGES ?? 20_000);
const CONCURRENCY = Number(process.env.BENCH_SEND_CONCURRENCY ?? 64);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void killAllSpawned().finally(() => process.exit(130)));
}

const home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-bench-send-'));
const database = await benchDatabase(4);
try {
  const simPort = await freePort();
  const apiPort = await freePort();
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const simUrl = `http://127.0.0.1:${simPort}`;
  const common = {
    CREDENCE_HOME: home,
    LOG_LEVEL: 'warn',
    PUBLIC_URL: apiUrl,
    // BENCH_PROFILE_DIR=<dir> writes a V8 CPU profile of each process there (open it in Chrome DevTools)
    ...(process.env.BENCH_PROFILE_DIR && { BENCH_NODE_ARGS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}` }),
  };
  const sim = spawnCredence(['simulator'], { ...common, SIMULATOR_PORT: String(simPort), SIMULATOR_FAULTS: '{"latencyMs":{"min":0,"max":5}}' });
  await sim.waitFor(/listening on/);
  const account = JSON.parse(await fs.readFile(path.join(home, 'simulator.json'), 'utf8')) as { sid: string; authToken: string };
  const env = {
    ...common,
    DATABASE_URL: database.url,
    TWILIO_ACCOUNT_SID: account.sid,
    TWILIO_AUTH_TOKEN: account.authToken,
    TWILIO_API_URL: simUrl,
    PORT: String(apiPort),
    DB_POOL_SIZE: '20',
    WORKER_CONCURRENCY: '16',
  };
  const api = spawnCredence(['api'], env);
  const [, opKey] = await api.waitFor(/Bootstrap operator API key[^\n]*\n\s+(crd_op_\S+)/);
  const worker = spawnCredence(['worker'], { ...env, LOG_LEVEL: process.env.BENCH_WORKER_LOG ?? 'warn' });
  await worker.waitFor(/Credence is running/);

  const call = async (method: string, url: string, key: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${apiUrl}${url}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (res.status >= 300) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const org = (await call('POST', '/v1/organizations', opKey!, { name: 'Bench' })) as { organization: { id: string }; admin_key: { key: string } };
  const ws = (await call('POST', '/v1/workspaces', org.admin_key.key, { name: 'Bench shop' })) as { id: string };
  const wsKey = ((await call('POST', '/v1/api-keys', org.admin_key.key, { name: 'bench', scope: 'workspace', workspace_id: ws.id })) as { key: string }).key;
  await call('POST', '/v1/sender-numbers', wsKey, { phone_number: '+14155550100', kind: 'short_code', mps: 10000 });
  // 20,000 transactional messages in a minute: lift the default 100/hour safety cap.
  await call('PATCH', `/v1/workspaces/${ws.id}/sending-rules`, org.admin_key.key, { hourly_cap: null });
  await call('POST', `/v1/organizations/${org.organization.id}/credits/grants`, opKey!, { amount: COUNT * 2, reason: 'bench', idempotency_key: 'bench' });

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
  process.stdout.write(`pushing ${COUNT} messages through the API with ${CONCURRENCY} concurrent clients…\n`);
  const t0 = Date.now();
  const start = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < COUNT) {
        const i = next++;
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

  const { rows } = await sql<{ body: string; created_at: Date }>`select body, created_at from messages where body like 'bench %'`.execute(database.db);
  const latencies = rows.map((r) => (accepted.get(r.body) ?? Number.NaN) - r.created_at.getTime()).filter(Number.isFinite).sort((a, b) => a - b);
  const duplicates = log.length - new Set(log.map((m) => m.body)).size;
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  process.stdout.write(`pipeline: ${COUNT} at the carrier ${((lastAccepted - t0) / 1000).toFixed(1)} s after the first request; duplicates=${duplicates}\n`);

  worker.child.kill('SIGTERM');
  api.child.kill('SIGTERM');
  await Promise.all([worker.exited, api.exited]);

  const ceiling = await measureCarrierCeiling({ simulatorUrl: simUrl, accountSid: account.sid, authToken: account.authToken, count: COUNT, concurrency: 50 });
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
