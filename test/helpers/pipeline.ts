import { sql } from 'kysely';
import { type Carrier, type CarrierSimulator, createTwilioCarrier, type FaultProfile, startCarrierSimulator } from '../../src/carriers/index.ts';
import * as credits from '../../src/credits/index.ts';
import { createStripePayments, DEFAULT_CATALOG } from '../../src/payments/index.ts';
import { type PaymentsSimulator, startPaymentsSimulator } from '../../src/payments/simulator/index.ts';
import { closeApp } from '../../src/http/app.ts';
import { buildTaskList, startWorker, type WorkerHandle } from '../../src/jobs/index.ts';
import { applyOptOut, type Capturer, type Dispatcher, type MessageRow, type SendDeps, startCapturer, startDispatcher } from '../../src/messaging/index.ts';
import { type Tenant, bearer, buildTestApp, createTenant, operatorKey, silentLog, type TestApp } from './app.ts';
import { createTestDatabase, type TestDatabase } from './db.ts';

/**
 * The whole send path for tests: a test database, the carrier simulator, the
 * Twilio adapter (official SDK over real HTTP), the API listening on a real
 * loopback port (status callbacks reach it), and a worker running the real
 * task list. Retry delays are shortened through the injected policy.
 */
export interface Pipeline {
  tdb: TestDatabase;
  app: TestApp;
  apiUrl: string;
  simulator: CarrierSimulator;
  carrier: Carrier;
  sendDeps: SendDeps;
  worker: WorkerHandle | undefined;
  op: string;
  tenant: Tenant;
  /** The Stripe-compatible simulator, with `payments: true`. */
  payments: PaymentsSimulator | undefined;
  /** This process's capture drain (also `sendDeps.captures`); a test may stop it to act as a process without one. */
  capturer: Capturer;
  startWorker(): Promise<void>;
  stopWorker(): Promise<void>;
  close(): Promise<void>;
}

export async function startPipeline(
  options: {
    faults?: FaultProfile;
    seed?: number;
    withWorker?: boolean;
    timeoutMs?: number;
    senderMps?: number;
    callbackDelayMs?: { sent: [number, number]; final: [number, number] };
    payments?: boolean;
    intake?: { backlogLimit: number; backlogWaitMs: number };
    streamHeartbeatMs?: number;
    /** below the least the configuration allows, to stand for claims slowed by a loaded machine */
    lookupGraceMs?: number;
  } = {},
): Promise<Pipeline> {
  const tdb = await createTestDatabase({ poolSize: 20 });
  // The API must know its own URL before it listens: take a port first.
  const { freePort } = await import('./ports.ts');
  const port = await freePort();
  const apiUrl = `http://127.0.0.1:${port}`;
  const simulator = await startCarrierSimulator({
    seed: options.seed ?? 1,
    inboundUrl: `${apiUrl}/webhooks/twilio/inbound`,
    ...(options.faults && { faults: options.faults }),
    ...(options.callbackDelayMs && { callbackDelayMs: options.callbackDelayMs }),
  });
  const account = simulator.accounts[0]!;
  const carrier = createTwilioCarrier({
    accountSid: account.sid,
    authToken: account.authToken,
    baseUrl: simulator.url,
    timeoutMs: options.timeoutMs ?? 2_000,
    publicUrl: apiUrl,
  });
  const payments = options.payments
    ? await startPaymentsSimulator({ webhookUrl: `${apiUrl}/webhooks/stripe`, seed: options.seed ?? 1 })
    : undefined;
  const billing = payments
    ? {
        db: tdb.db,
        payments: createStripePayments({ secretKey: payments.secretKey, webhookSecret: payments.webhookSecret, apiUrl: payments.url }),
        catalog: DEFAULT_CATALOG,
        publicUrl: apiUrl,
        pastDueGraceMs: 3 * 86_400_000,
        log: silentLog,
      }
    : undefined;
  const app = await buildTestApp(tdb, {
    carrier,
    publicUrl: apiUrl,
    ...(billing && { billing }),
    ...(options.intake && { intake: options.intake }),
    ...(options.streamHeartbeatMs !== undefined && { streamHeartbeatMs: options.streamHeartbeatMs }),
  });
  await app.listen({ host: '127.0.0.1', port });
  const op = await operatorKey(tdb);
  const tenant = await createTenant(app, op, 'Pipeline Co');
  const sender = await app.inject({
    method: 'POST',
    url: '/v1/sender-numbers',
    headers: bearer(tenant.workspaceKey),
    payload: { phone_number: '+14155550100', mps: options.senderMps ?? 1000 },
  });
  if (sender.statusCode !== 201) throw new Error(`sender: ${sender.body}`);
  const sendDeps: SendDeps = {
    db: tdb.pipelineDb,
    carrier,
    publicUrl: apiUrl,
    log: silentLog,
    breakers: new Map(),
    retryDelayMs: () => 50,
    // "not at the carrier" is proof only after any live call ended: a call begins within the
    // window (grace - timeout - 0.5 s: 2.5 s, the slot horizon of 2 s and a claim's own time)
    // and ends within the timeout (the least grace the configuration allows)
    lookupGraceMs: options.lookupGraceMs ?? (options.timeoutMs ?? 2_000) + 3_000,
    carrierTimeoutMs: options.timeoutMs ?? 2_000,
    // short, so reconciliation in tests looks at a dead worker's messages quickly
    leaseMs: 2_000,
  };
  let dispatcher: Dispatcher | undefined;
  // The capture drain runs whether or not the job worker does: tests that
  // call sendBatch by hand act as a worker process.
  const capturer: Capturer = startCapturer({ db: tdb.pipelineDb, log: silentLog, pollMs: 200 });
  sendDeps.captures = capturer;
  const pipeline: Pipeline = {
    tdb,
    app,
    apiUrl,
    simulator,
    carrier,
    sendDeps,
    worker: undefined,
    op,
    tenant,
    payments,
    capturer,
    startWorker: async () => {
      dispatcher = await startDispatcher({ pool: tdb.pool, db: tdb.pipelineDb, log: silentLog });
      pipeline.worker = await startWorker({
        pool: tdb.pool,
        taskList: buildTaskList({ db: tdb.db, log: silentLog, send: sendDeps }),
        concurrency: 4,
        log: silentLog,
        pollInterval: 50,
      });
    },
    stopWorker: async () => {
      await dispatcher?.stop();
      dispatcher = undefined;
      await pipeline.worker?.stop();
      pipeline.worker = undefined;

    },
    close: async () => {
      await pipeline.stopWorker();
      await capturer.stop();
      await closeApp(app);
      await simulator.stop();
      await payments?.stop();
      await tdb.close();
    },
  };
  if (options.withWorker !== false) await pipeline.startWorker();
  return pipeline;
}

export async function grantCredits(p: Pipeline, amount: number, key = `grant-${Date.now()}-${Math.random()}`): Promise<void> {
  await credits.grant(p.tdb.db, { organizationId: p.tenant.organizationId, amount, idempotencyKey: key, actor: { type: 'system', id: 'test' } });
}

export async function sendViaApi(
  p: Pipeline,
  body: { to: string; body: string; purpose?: string; from?: string; timezone?: string },
  idempotencyKey?: string,
): Promise<{ statusCode: number; json: Record<string, unknown> }> {
  const res = await p.app.inject({
    method: 'POST',
    url: '/v1/messages',
    headers: { ...bearer(p.tenant.workspaceKey), ...(idempotencyKey && { 'idempotency-key': idempotencyKey }) },
    payload: { purpose: 'transactional', ...body },
  });
  return { statusCode: res.statusCode, json: res.json() as Record<string, unknown> };
}

export async function message(p: Pipeline, id: string): Promise<MessageRow> {
  const { rows } = await sql<MessageRow>`select * from messages where id = ${id}`.execute(p.tdb.db);
  if (rows[0] === undefined) throw new Error(`no message ${id}`);
  return rows[0];
}

/** Poll until `check` returns a value (not undefined), or fail after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function waitForStatus(p: Pipeline, id: string, statuses: string[], timeoutMs = 15_000): Promise<MessageRow> {
  return eventually(
    async () => {
      const m = await message(p, id);
      return statuses.includes(m.status) ? m : undefined;
    },
    timeoutMs,
    `${id} to reach ${statuses.join('|')}`,
  );
}

/**
 * What the minute crons do (reconciliation, the sweep, campaign checks), done
 * now and with short staleness, so crash tests need not wait for the clock.
 */
export async function nudge(p: Pipeline): Promise<void> {
  const { reconcile, scheduleDispatch, sweep } = await import('../../src/messaging/index.ts');
  const { sweepCampaigns } = await import('../../src/campaigns/index.ts');
  await reconcile(p.sendDeps);
  await p.tdb.db.transaction().execute(async (trx) => {
    const found = await sweep(trx, { staleQueuedMs: 3_000 });
    for (const org of found.organizations) await scheduleDispatch(trx, org);
    await sweepCampaigns(trx);
  });
}

/** A real `credence worker` process against this pipeline's database and simulator. */
export async function spawnWorker(p: Pipeline, home: string, env: Record<string, string> = {}) {
  const { spawnCredence } = await import('./process.ts');
  const account = p.simulator.accounts[0]!;
  return spawnCredence(['worker'], {
    DATABASE_URL: p.tdb.url,
    CREDENCE_HOME: home,
    TWILIO_ACCOUNT_SID: account.sid,
    TWILIO_AUTH_TOKEN: account.authToken,
    TWILIO_API_URL: p.simulator.url,
    PUBLIC_URL: p.apiUrl,
    SEND_LEASE_MS: '2000',
    LOG_LEVEL: 'info',
    ...env,
  });
}

/**
 * What send.ts's outcome step does with two 21610 answers: one applyOptOut
 * per number, in the batch's order, in one transaction, with `during`
 * started between the two (it then meets rows the first holds while the
 * second waits for rows it may hold). Resolves with how each ended: 'ok' or
 * the error's message.
 */
export async function optOutTwoInTurn(p: Pipeline, first: string, second: string, during: () => Promise<unknown>): Promise<[string, string]> {
  const scope = { organizationId: p.tenant.organizationId, workspaceId: p.tenant.workspaceId };
  const optOut = (trx: Parameters<typeof applyOptOut>[0], phone: string) =>
    applyOptOut(trx, { ...scope, phone, source: 'carrier_opt_out', evidence: {}, actor: 'carrier', deferRelease: true });
  const settle = (run: Promise<unknown>) => run.then(() => 'ok', (e: Error) => e.message);
  let other: Promise<string> | undefined;
  const outcome = settle(
    p.tdb.db.transaction().execute(async (trx) => {
      await optOut(trx, first);
      other = settle(during());
      await new Promise((r) => setTimeout(r, 300));
      await optOut(trx, second);
    }),
  );
  return [await outcome, await other!];
}
