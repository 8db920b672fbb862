import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import {
  type Carrier,
  type CarrierSimulator,
  createTwilioCarrier,
  type FaultProfile,
  parseFaultProfile,
  startCarrierSimulator,
} from './carriers/index.ts';
import { backoffMs, type BreakerState, type Capturer, type Dispatcher, startCapturer, startDispatcher } from './messaging/index.ts';
import { type BillingDeps, type Catalog, createStripePayments, DEFAULT_CATALOG } from './payments/index.ts';
import { type PaymentsSimulator, startPaymentsSimulator } from './payments/simulator/index.ts';
import { type Config, ConfigError } from './config.ts';
import { createDb, createPool, type Db, waitForDatabase } from './db/db.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './db/embedded.ts';
import { migrate } from './db/migrate.ts';
import { buildApp, closeApp } from './http/app.ts';
import { buildTaskList, CRONTAB, startWorker, type WorkerHandle } from './jobs/index.ts';
import type { Logger } from './shared/logger.ts';
import { bootstrapOperatorKey, type CreatedKey } from './tenancy/index.ts';

/**
 * The one place where Credence is wired: config → database → adapters →
 * HTTP app and job worker. Everything else receives what it needs as
 * arguments.
 */
export interface Database {
  pool: pg.Pool;
  db: Db;
  /**
   * The send path's transactions (intake, dispatch, claim, outcome, status
   * callbacks, capture drain, reconciliation): the same pool, but each
   * transaction reuses one plan per statement (`DB_GENERIC_PLANS`).
   */
  pipelineDb: Db;
  url: string;
  embedded: EmbeddedPostgres | undefined;
  close(): Promise<void>;
}

export async function openDatabase(config: Config, log: Logger): Promise<Database> {
  let embedded: EmbeddedPostgres | undefined;
  let url = config.databaseUrl;
  if (url === undefined) {
    embedded = await startEmbeddedPostgres({ dir: config.home, port: config.embeddedPgPort, log });
    url = embedded.url;
  }
  const pool = createPool(url, config.dbPoolSize);
  if (embedded === undefined) {
    // an external server may be restarting as this process starts: wait for it a while
    await waitForDatabase(pool, 30_000, (reason) => log.warn({ reason }, 'waiting for PostgreSQL')).catch(async (err: unknown) => {
      await pool.end().catch(() => {});
      throw err;
    });
  }
  const db = createDb(pool, { prepare: config.dbPreparedStatements });
  const pipelineDb = createDb(pool, { prepare: config.dbPreparedStatements, genericPlans: config.dbGenericPlans });
  let closed: Promise<void> | undefined;
  return {
    pool,
    db,
    pipelineDb,
    url,
    embedded,
    close: () => {
      closed ??= (async () => {
        // ends the pool, which pipelineDb shares
        await db.destroy().catch((err: unknown) => log.warn({ err }, 'closing the pool failed'));
        await embedded?.stop();
      })();
      return closed;
    },
  };
}

export interface Roles {
  api: boolean;
  worker: boolean;
  /** Run the carrier simulator in this process (all-in-one start without Twilio credentials). */
  simulator?: boolean;
}

/** Credentials of the local carrier simulator, kept with the embedded data so every process agrees. */
async function simulatorAccount(home: string): Promise<{ sid: string; authToken: string }> {
  const file = path.join(home, 'simulator.json');
  try {
    const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as { sid?: unknown; authToken?: unknown };
    if (typeof parsed.sid === 'string' && typeof parsed.authToken === 'string') return { sid: parsed.sid, authToken: parsed.authToken };
  } catch {
    // first run: create below
  }
  const account = { sid: `AC${randomBytes(16).toString('hex')}`, authToken: randomBytes(16).toString('hex') };
  await fs.mkdir(home, { recursive: true });
  await fs.writeFile(file, `${JSON.stringify(account, null, 2)}\n`, { mode: 0o600 });
  return account;
}

/** `credence simulator`: the carrier simulator on its own, with the shared credentials. */
export async function startSimulatorProcess(config: Config, log: Logger, faultsJson: string | undefined): Promise<CarrierSimulator> {
  let faults: FaultProfile | undefined;
  if (faultsJson !== undefined && faultsJson !== '') {
    let raw: unknown;
    try {
      raw = JSON.parse(faultsJson);
    } catch {
      throw new ConfigError([{ variable: 'SIMULATOR_FAULTS', problem: 'must be JSON' }]);
    }
    const parsed = parseFaultProfile(raw);
    if (!parsed.ok) throw new ConfigError([{ variable: 'SIMULATOR_FAULTS', problem: parsed.errors.join('; ') }]);
    faults = parsed.profile;
  }
  return startCarrierSimulator({
    accounts: [await simulatorAccount(config.home)],
    port: config.simulatorPort,
    inboundUrl: `${config.publicUrl}/webhooks/twilio/inbound`,
    log: log.child({ component: 'carrier-simulator' }),
    ...(faults && { faults }),
    ...(config.simulatorSeed !== undefined && { seed: config.simulatorSeed }),
  });
}

export interface CarrierSetup {
  carrier: Carrier;
  simulator: CarrierSimulator | undefined;
}

/**
 * The carrier: Twilio when credentials are configured; otherwise the built-in
 * simulator, reached through the same Twilio adapter and official SDK.
 */
export async function openCarrier(config: Config, log: Logger, runSimulator: boolean): Promise<CarrierSetup> {
  if (config.twilio !== undefined) {
    const carrier = createTwilioCarrier({
      accountSid: config.twilio.accountSid,
      authToken: config.twilio.authToken,
      ...(config.twilio.apiUrl !== undefined && { baseUrl: config.twilio.apiUrl }),
      timeoutMs: config.carrierTimeoutMs,
      publicUrl: config.publicUrl,
    });
    return { carrier, simulator: undefined };
  }
  const account = await simulatorAccount(config.home);
  let simulator: CarrierSimulator | undefined;
  if (runSimulator) {
    simulator = await startCarrierSimulator({
      accounts: [account],
      port: config.simulatorPort,
      inboundUrl: `${config.publicUrl}/webhooks/twilio/inbound`,
      log: log.child({ component: 'carrier-simulator' }),
    });
  }
  const carrier = createTwilioCarrier({
    accountSid: account.sid,
    authToken: account.authToken,
    baseUrl: simulator?.url ?? `http://127.0.0.1:${config.simulatorPort}`,
    timeoutMs: config.carrierTimeoutMs,
    publicUrl: config.publicUrl,
  });
  return { carrier, simulator };
}

/** Secrets of the local payments simulator, kept with the embedded data so every process agrees. */
async function paymentsSimulatorSecrets(home: string): Promise<{ secretKey: string; webhookSecret: string }> {
  const file = path.join(home, 'payments-simulator.json');
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as { secretKey: string; webhookSecret: string };
  } catch {
    const secrets = { secretKey: `sk_test_${randomBytes(18).toString('hex')}`, webhookSecret: `whsec_${randomBytes(18).toString('hex')}` };
    await fs.mkdir(home, { recursive: true });
    await fs.writeFile(file, JSON.stringify(secrets), { mode: 0o600 });
    return secrets;
  }
}

/**
 * Payments: Stripe through the official SDK when STRIPE_SECRET_KEY is set;
 * otherwise the built-in Stripe-compatible simulator (run in this process
 * for `credence start`), reached through the same adapter.
 */
export async function openPayments(
  config: Config,
  log: Logger,
  runSimulator: boolean,
): Promise<{ billing: BillingDeps; simulator: PaymentsSimulator | undefined }> {
  const catalog: Catalog = config.catalogJson ? (JSON.parse(config.catalogJson) as Catalog) : DEFAULT_CATALOG;
  const common = { db: undefined as never, catalog, publicUrl: config.publicUrl, pastDueGraceMs: config.pastDueGraceMs, log };
  if (config.stripe !== undefined) {
    const payments = createStripePayments({ secretKey: config.stripe.secretKey, webhookSecret: config.stripe.webhookSecret, apiUrl: config.stripe.apiUrl });
    return { billing: { ...common, payments }, simulator: undefined };
  }
  const secrets = await paymentsSimulatorSecrets(config.home);
  const simulator = runSimulator
    ? await startPaymentsSimulator({ port: config.paymentsSimulatorPort, ...secrets, webhookUrl: `${config.publicUrl}/webhooks/stripe`, retry: STRIPE_LIKE_RETRY })
    : undefined;
  const payments = createStripePayments({ ...secrets, apiUrl: simulator?.url ?? `http://127.0.0.1:${config.paymentsSimulatorPort}` });
  return { billing: { ...common, payments }, simulator };
}

/**
 * Stripe retries a webhook for days, and Credence has no other way to learn
 * of a payment event, so the simulator's deliveries must outlast an API or
 * PostgreSQL restart: twelve tries over about seventeen minutes. (Its
 * three quick tries lost a dispute's `closed` event sent during a chaos
 * run's PostgreSQL restart, and the organization stayed frozen.)
 */
const STRIPE_LIKE_RETRY = { attempts: 12, backoffMs: 500 };

/** `credence payments-simulator`: the payments simulator on its own, with the shared secrets. */
export async function startPaymentsSimulatorProcess(config: Config): Promise<PaymentsSimulator> {
  const secrets = await paymentsSimulatorSecrets(config.home);
  return startPaymentsSimulator({
    port: config.paymentsSimulatorPort,
    ...secrets,
    webhookUrl: `${config.publicUrl}/webhooks/stripe`,
    ...(config.simulatorSeed !== undefined && { seed: config.simulatorSeed }),
    retry: STRIPE_LIKE_RETRY,
  });
}


export interface RunningCredence {
  url: string | undefined;
  operatorKey: CreatedKey | undefined;
  database: Database;
  simulator: CarrierSimulator | undefined;
  paymentsSimulator: PaymentsSimulator | undefined;
  /**
   * Resolves if a part fails on its own: the embedded PostgreSQL this process
   * owns exits, or the job worker's supervision fails (a job runner that
   * ends is started again).
   */
  failed: Promise<Error>;
  stop(): Promise<void>;
}

export async function startCredence(
  config: Config,
  log: Logger,
  roles: Roles,
): Promise<RunningCredence> {
  const database = await openDatabase(config, log);
  const { db, pipelineDb, pool } = database;
  let worker: WorkerHandle | undefined;
  let app: Awaited<ReturnType<typeof buildApp>> | undefined;
  let simulator: CarrierSimulator | undefined;
  let paymentsSimulator: PaymentsSimulator | undefined;
  let dispatcher: Dispatcher | undefined;
  let capturer: Capturer | undefined;
  try {
    const carrierSetup = await openCarrier(config, log, roles.simulator ?? false);
    const { carrier } = carrierSetup;
    simulator = carrierSetup.simulator;
    const result = await migrate(pool);
    if (result.applied.length > 0) log.info({ applied: result.applied }, 'migrations applied');

    let url: string | undefined;
    let operatorKey: CreatedKey | undefined;
    if (roles.api) {
      operatorKey = await bootstrapOperatorKey(db);
      // all-in-one start without a Stripe key runs the payments simulator too
      const paymentsSetup = await openPayments(config, log, roles.worker && config.stripe === undefined);
      paymentsSimulator = paymentsSetup.simulator;
      app = await buildApp({
        config,
        db,
        pipelineDb,
        pool,
        log,
        carrier,
        intake: { backlogLimit: config.intakeBacklogLimit, backlogWaitMs: config.intakeBacklogWaitMs },
        billing: { ...paymentsSetup.billing, db },
      });
      await app.listen({ host: config.host, port: config.port });
      const address = app.server.address();
      const port = typeof address === 'object' && address !== null ? address.port : config.port;
      url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
    }
    let failed: Promise<Error> = new Promise(() => {});
    if (roles.worker) {
      dispatcher = await startDispatcher({ pool, db: pipelineDb, log });
      capturer = startCapturer({ db: pipelineDb, log });
      worker = await startWorker({
        pool,
        taskList: buildTaskList({
          db,
          log,
          send: {
            db: pipelineDb,
            carrier,
            publicUrl: config.publicUrl,
            log,
            breakers: new Map<string, BreakerState>(),
            leaseMs: config.sendLeaseMs,
            lookupGraceMs: config.lookupGraceMs,
            carrierTimeoutMs: config.carrierTimeoutMs,
            horizonMs: config.reconciliationHorizonMs,
            retryDelayMs: (attempts, random) => backoffMs(attempts, random, config.retryBaseMs),
            captures: capturer,
          },
          staleQueuedMs: 2 * config.maintenanceIntervalMs,
        }),
        crontab: CRONTAB,
        maintenanceIntervalMs: config.maintenanceIntervalMs,
        concurrency: config.workerConcurrency,
        log,
      });
      failed = worker.done.then(
        () => new Error('the job worker stopped'),
        (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
      );
    }
    // The embedded server this process owns is its database: if it dies, so
    // does Credence (loudly, exit 1), rather than answer 503 and retry forever.
    if (database.embedded !== undefined) failed = Promise.race([failed, database.embedded.died]);

    let stopping: Promise<void> | undefined;
    const stop = () => {
      stopping ??= (async () => {
        // Order matters: stop taking requests, stop dispatching, let in-flight
        // jobs finish (or release them), stop the simulator, then close the
        // pool, and stop PostgreSQL last.
        const step = async (name: string, fn: () => Promise<void>) => {
          await fn().catch((err: unknown) => log.warn({ err }, `${name} failed`));
          log.debug(`${name} done`);
        };
        if (app) await step('closing the HTTP server', () => closeApp(app!));
        if (dispatcher) await step('stopping the dispatcher', () => dispatcher!.stop());
        if (worker) await step('stopping the worker', () => worker!.stop());
        if (capturer) await step('stopping the capture drain', () => capturer!.stop());
        if (simulator) await step('stopping the carrier simulator', () => simulator!.stop());
        if (paymentsSimulator) await step('stopping the payments simulator', () => paymentsSimulator!.stop());
        await database.close();
      })();
      return stopping;
    };
    return { url, operatorKey, database, simulator, paymentsSimulator, failed, stop };
  } catch (err) {
    await app?.close().catch(() => {});
    await dispatcher?.stop().catch(() => {});
    await worker?.stop().catch(() => {});
    await capturer?.stop().catch(() => {});
    await simulator?.stop().catch(() => {});
    await paymentsSimulator?.stop().catch(() => {});
    await database.close();
    throw err;
  }
}
