import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '../test/helpers/ports.ts';
import { type Spawned, spawnCredence } from '../test/helpers/process.ts';

/**
 * The process set-up the send and campaign benchmarks share: the carrier
 * simulator (its own process, 0–5 ms latency), `credence api` and one
 * `credence worker` against the benchmark's database, and an organization
 * with a workspace, a key, a fast sender and credits.
 * BENCH_PROFILE_DIR=<dir> writes a V8 CPU profile of each process;
 * BENCH_NODE_ARGS passes node flags (e.g. --max-old-space-size=200).
 */
export interface BenchStack {
  apiUrl: string;
  simUrl: string;
  account: { sid: string; authToken: string };
  sim: Spawned;
  api: Spawned;
  worker: Spawned;
  opKey: string;
  organizationId: string;
  orgKey: string;
  workspaceId: string;
  wsKey: string;
  call(method: string, url: string, key: string, body?: unknown): Promise<Record<string, unknown>>;
}

export async function startBenchStack(home: string, databaseUrl: string, credits: number): Promise<BenchStack> {
  const simPort = await freePort();
  const apiPort = await freePort();
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const simUrl = `http://127.0.0.1:${simPort}`;
  const nodeArgs = [process.env.BENCH_PROFILE_DIR && `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`, process.env.BENCH_NODE_ARGS]
    .filter(Boolean)
    .join(' ');
  const common = {
    CREDENCE_HOME: home,
    LOG_LEVEL: 'warn',
    PUBLIC_URL: apiUrl,
    ...(nodeArgs && { BENCH_NODE_ARGS: nodeArgs }),
    // to compare: DB_GENERIC_PLANS=off npm run bench:send
    ...(process.env.DB_GENERIC_PLANS && { DB_GENERIC_PLANS: process.env.DB_GENERIC_PLANS }),
    // to try another bound of the API's flow control (0: none)
    ...(process.env.INTAKE_BACKLOG_LIMIT && { INTAKE_BACKLOG_LIMIT: process.env.INTAKE_BACKLOG_LIMIT }),
  };
  const sim = spawnCredence(['simulator'], { ...common, SIMULATOR_PORT: String(simPort), SIMULATOR_FAULTS: '{"latencyMs":{"min":0,"max":5}}' });
  await sim.waitFor(/listening on/);
  const account = JSON.parse(await fs.readFile(path.join(home, 'simulator.json'), 'utf8')) as { sid: string; authToken: string };
  const env = {
    ...common,
    DATABASE_URL: databaseUrl,
    TWILIO_ACCOUNT_SID: account.sid,
    TWILIO_AUTH_TOKEN: account.authToken,
    TWILIO_API_URL: simUrl,
    PORT: String(apiPort),
    // the defaults, written out: what the figures were measured with (WORKER_CONCURRENCY may be set to compare)
    DB_POOL_SIZE: '20',
    WORKER_CONCURRENCY: process.env.WORKER_CONCURRENCY ?? '8',
  };
  const api = spawnCredence(['api'], env);
  const [, opKey] = await api.waitFor(/Bootstrap operator API key[^\n]*\n\s+(crd_op_\S+)/);
  const worker = spawnCredence(['worker'], { ...env, LOG_LEVEL: process.env.BENCH_WORKER_LOG ?? 'warn' });
  await worker.waitFor(/Credence is running/);

  const call = async (method: string, url: string, key: string, body?: unknown) => {
    const res = await fetch(`${apiUrl}${url}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
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
  await call('POST', `/v1/organizations/${org.organization.id}/credits/grants`, opKey!, { amount: credits, reason: 'bench', idempotency_key: 'bench' });
  return {
    apiUrl,
    simUrl,
    account,
    sim,
    api,
    worker,
    opKey: opKey!,
    organizationId: org.organization.id,
    orgKey: org.admin_key.key,
    workspaceId: ws.id,
    wsKey,
    call,
  };
}
