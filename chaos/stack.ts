/**
 * The chaos run's processes: an embedded PostgreSQL owned by this process
 * (so it can be stopped and started mid-run), the carrier and payments
 * simulators, one `credence api` and several `credence worker` processes,
 * each a real child process that can be SIGKILLed and started again.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { createDb, createPool, type Db } from '../src/db/db.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../src/db/embedded.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';
import { type Spawned, spawnCredence } from '../test/helpers/process.ts';
import type { Scenario } from './scenario.ts';

export interface ChaosStack {
  home: string;
  apiUrl: string;
  simUrl: string;
  paymentsUrl: string;
  paymentsSecretKey: string;
  opKey: string;
  databaseUrl: string;
  db: Db;
  workers: (Spawned | undefined)[];
  /** Kill worker i with SIGKILL and start a new one in its place. */
  killWorker(i: number): Promise<void>;
  /** Stop PostgreSQL (fast: sessions aborted), wait, start it again on the same data. */
  restartPostgres(downMs: number): Promise<void>;
  /** Processes that died without being killed by the run (restarted), by role. */
  crashes: { api: number; worker: number };
  kills: number;
  close(): Promise<void>;
}

/** The knobs that put reconciliation, retries and leases on a clock minutes long, not days. */
export const FAST_CLOCK: Record<string, string> = {
  CARRIER_TIMEOUT_MS: '2000',
  SEND_LEASE_MS: '3000',
  LOOKUP_GRACE_MS: '5000',
  SEND_RETRY_BASE_MS: '400',
  MAINTENANCE_INTERVAL_MS: '1000',
  RECONCILIATION_HORIZON_MS: '600000',
};

export async function startChaosStack(scenario: Scenario, log: (line: string) => void): Promise<ChaosStack> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-chaos-'));
  await fs.chmod(home, 0o755);
  const pgDir = path.join(home, 'pg');
  const pgPort = await freePort();
  const quiet = createLogger('error');
  let server: EmbeddedPostgres = await startEmbeddedPostgres({ dir: pgDir, port: pgPort, log: quiet, maxConnections: 300 });
  const databaseUrl = server.url;
  const [apiPort, simPort, payPort] = [await freePort(), await freePort(), await freePort()];
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const catalog = {
    packs: [{ id: 'chaos', name: 'Chaos pack', credits: scenario.packCredits, amount: 1000, currency: 'eur' }],
    plans: [{ id: 'chaos', name: 'Chaos plan', monthlyCredits: scenario.planCredits, amount: 2000, currency: 'eur' }],
  };
  const common = {
    CREDENCE_HOME: home,
    LOG_LEVEL: 'warn',
    PUBLIC_URL: apiUrl,
    SIMULATOR_PORT: String(simPort),
    PAYMENTS_SIMULATOR_PORT: String(payPort),
    SIMULATOR_SEED: String(scenario.seed),
  };
  const faults = { latencyMs: scenario.faults.latencyMs };
  const sim = spawnCredence(['simulator'], { ...common, SIMULATOR_FAULTS: JSON.stringify(faults) });
  const pay = spawnCredence(['payments-simulator'], common);
  await Promise.all([sim.waitFor(/listening on/), pay.waitFor(/listening on/)]);
  const account = JSON.parse(await fs.readFile(path.join(home, 'simulator.json'), 'utf8')) as { sid: string; authToken: string };
  const paySecrets = JSON.parse(await fs.readFile(path.join(home, 'payments-simulator.json'), 'utf8')) as { secretKey: string };
  const env = {
    ...common,
    ...FAST_CLOCK,
    DATABASE_URL: databaseUrl,
    TWILIO_ACCOUNT_SID: account.sid,
    TWILIO_AUTH_TOKEN: account.authToken,
    TWILIO_API_URL: `http://127.0.0.1:${simPort}`,
    PORT: String(apiPort),
    DB_POOL_SIZE: '12',
    WORKER_CONCURRENCY: '8',
    BILLING_CATALOG: JSON.stringify(catalog),
  };

  const crashes = { api: 0, worker: 0 };
  let closing = false;
  let api = spawnCredence(['api'], env);
  const [, opKey] = await api.waitFor(/Bootstrap operator API key[^\n]*\n\s+(crd_op_\S+)/);
  const watchApi = (p: Spawned) =>
    void p.exited.then(() => {
      if (closing) return;
      crashes.api++;
      log(`api process exited on its own (${p.output().split('\n').filter(Boolean).at(-1) ?? ''}); restarting it`);
      api = spawnCredence(['api'], env);
      watchApi(api);
    });
  watchApi(api);

  const killed = new Set<Spawned>();
  const workers: (Spawned | undefined)[] = [];
  const startWorkerAt = (i: number) => {
    const w = spawnCredence(['worker'], env);
    workers[i] = w;
    void w.exited.then(() => {
      if (closing || killed.has(w)) return;
      crashes.worker++;
      log(`worker ${i} exited on its own: ${w.output().split('\n').filter(Boolean).slice(-2).join(' | ').slice(0, 400)}; restarting it`);
      startWorkerAt(i);
    });
    return w;
  };
  for (let i = 0; i < scenario.scale.workers; i++) startWorkerAt(i);
  await Promise.all(workers.map((w) => w!.waitFor(/Credence is running/)));

  const pool: pg.Pool = createPool(databaseUrl, 4);
  const db = createDb(pool);
  const stack: ChaosStack = {
    home,
    apiUrl,
    simUrl: `http://127.0.0.1:${simPort}`,
    paymentsUrl: `http://127.0.0.1:${payPort}`,
    paymentsSecretKey: paySecrets.secretKey,
    opKey: opKey!,
    databaseUrl,
    db,
    workers,
    crashes,
    kills: 0,
    killWorker: async (i) => {
      const w = workers[i];
      if (w !== undefined && w.child.exitCode === null && w.child.signalCode === null) {
        killed.add(w);
        w.child.kill('SIGKILL');
        await w.exited;
        stack.kills++;
      }
      startWorkerAt(i);
    },
    restartPostgres: async (downMs) => {
      await server.stop('fast');
      await new Promise((r) => setTimeout(r, downMs));
      server = await startEmbeddedPostgres({ dir: pgDir, port: pgPort, log: quiet, maxConnections: 300 });
    },
    close: async () => {
      closing = true;
      const all = [api, sim, pay, ...workers].filter((p): p is Spawned => p !== undefined);
      await Promise.all(
        all.map(async (p) => {
          if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
          const timer = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
          await p.exited;
          clearTimeout(timer);
        }),
      );
      await db.destroy().catch(() => {});
      await server.stop('fast');
      await fs.rm(home, { recursive: true, force: true });
    },
  };
  return stack;
}
