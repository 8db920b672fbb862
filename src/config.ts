import path from 'node:path';

/**
 * Configuration is read from the environment once, at start-up, against one
 * typed schema. Every problem is collected and reported together, each naming
 * the variable and what is wrong, so a bad deployment fails before it serves.
 */
export interface Config {
  /** External PostgreSQL; when absent Credence runs its own embedded server. */
  databaseUrl: string | undefined;
  /** Where the embedded database and local state live. */
  home: string;
  host: string;
  port: number;
  /** The URL the outside world uses to reach this API (webhook signatures). */
  publicUrl: string;
  logLevel: LogLevel;
  workerConcurrency: number;
  embeddedPgPort: number;
  dbPoolSize: number;
  /** Run frequent statements as named prepared statements (off behind a transaction-pooling proxy). */
  dbPreparedStatements: boolean;
  /** The send path's transactions reuse one plan per statement (`plan_cache_mode = force_generic_plan`). */
  dbGenericPlans: boolean;
  shutdownTimeoutMs: number;
  /** POST /v1/messages: an organization's API messages due and not yet at the carrier above which requests wait (0 = no limit). */
  intakeBacklogLimit: number;
  /** How long such a request waits for room before its 429. */
  intakeBacklogWaitMs: number;
  /** Real Twilio account; when absent, Credence sends through its carrier simulator. */
  twilio: { accountSid: string; authToken: string; apiUrl: string | undefined } | undefined;
  /** Port of the built-in carrier simulator (`credence start` without Twilio credentials). */
  simulatorPort: number;
  carrierTimeoutMs: number;
  /** How long a claimed message may stay `sending` before reconciliation looks at it. */
  sendLeaseMs: number;
  /** First retry delay of a transient carrier error; doubles per attempt, capped at 10×. */
  retryBaseMs: number;
  /** How often reconciliation and the sweep run (the cron's minute, or a faster timer). */
  maintenanceIntervalMs: number;
  /** How long an unknown outcome waits for evidence before it is failed and captured. */
  reconciliationHorizonMs: number;
  /** How long after a claim "not found at the carrier" proves the message never got there. */
  lookupGraceMs: number;
  /** Seed of the simulators' random faults (replayable runs); unset = random. */
  simulatorSeed: number | undefined;
  /** Real Stripe account; when absent, Credence bills through its payments simulator. */
  stripe: { secretKey: string; webhookSecret: string; apiUrl: string | undefined } | undefined;
  /** Port of the built-in payments simulator. */
  paymentsSimulatorPort: number;
  /** How long a past_due subscription may still send. */
  pastDueGraceMs: number;
  /** BILLING_CATALOG: packs and plans (JSON), or the defaults. */
  catalogJson: string | undefined;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = [
  'fatal',
  'error',
  'warn',
  'info',
  'debug',
  'trace',
  'silent',
];

export class ConfigError extends Error {
  readonly problems: { variable: string; problem: string }[];
  constructor(problems: { variable: string; problem: string }[]) {
    super(
      `Invalid configuration:\n${problems.map((p) => `  ${p.variable}: ${p.problem}`).join('\n')}`,
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;
type Parser<T> = (raw: string) => { ok: true; value: T } | { ok: false; problem: string };

const integer =
  (min: number, max: number): Parser<number> =>
  (raw) => {
    if (!/^-?\d+$/.test(raw.trim()))
      return { ok: false, problem: `must be an integer, got "${raw}"` };
    const n = Number(raw);
    if (n < min || n > max)
      return { ok: false, problem: `must be between ${min} and ${max}, got ${n}` };
    return { ok: true, value: n };
  };

const url =
  (protocols: string[]): Parser<string> =>
  (raw) => {
    try {
      const u = new URL(raw);
      if (!protocols.includes(u.protocol)) {
        return { ok: false, problem: `must use ${protocols.join(' or ')}, got "${u.protocol}"` };
      }
      return { ok: true, value: raw };
    } catch {
      return { ok: false, problem: `must be a URL, got "${raw}"` };
    }
  };

const oneOf =
  <T extends string>(values: readonly T[]): Parser<T> =>
  (raw) =>
    (values as readonly string[]).includes(raw)
      ? { ok: true, value: raw as T }
      : { ok: false, problem: `must be one of ${values.join(', ')}, got "${raw}"` };

const nonEmpty: Parser<string> = (raw) =>
  raw.trim() === '' ? { ok: false, problem: 'must not be empty' } : { ok: true, value: raw };

export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Readonly<Config> {
  const problems: { variable: string; problem: string }[] = [];

  function read<T>(variable: string, parser: Parser<T>, fallback: T): T;
  function read<T>(variable: string, parser: Parser<T>, fallback: undefined): T | undefined;
  function read<T>(variable: string, parser: Parser<T>, fallback: T | undefined): T | undefined {
    const raw = env[variable];
    if (raw === undefined || raw === '') return fallback;
    const result = parser(raw);
    if (!result.ok) {
      problems.push({ variable, problem: result.problem });
      return fallback;
    }
    return result.value;
  }

  const port = read('PORT', integer(0, 65535), 3000);
  const config: Config = {
    databaseUrl: read('DATABASE_URL', url(['postgres:', 'postgresql:']), undefined),
    home: path.resolve(cwd, read('CREDENCE_HOME', nonEmpty, '.credence')),
    host: read('HOST', nonEmpty, '127.0.0.1'),
    port,
    publicUrl: read('PUBLIC_URL', url(['http:', 'https:']), `http://localhost:${port}`).replace(
      /\/+$/,
      '',
    ),
    logLevel: read('LOG_LEVEL', oneOf(LOG_LEVELS), 'info'),
    workerConcurrency: read('WORKER_CONCURRENCY', integer(1, 200), 8),
    embeddedPgPort: read('EMBEDDED_PG_PORT', integer(1024, 65535), 54329),
    dbPoolSize: read('DB_POOL_SIZE', integer(2, 500), 20),
    dbPreparedStatements: read('DB_PREPARED_STATEMENTS', oneOf(['on', 'off'] as const), 'on') === 'on',
    dbGenericPlans: read('DB_GENERIC_PLANS', oneOf(['on', 'off'] as const), 'on') === 'on',
    shutdownTimeoutMs: read('SHUTDOWN_TIMEOUT_MS', integer(100, 600_000), 15_000),
    intakeBacklogLimit: read('INTAKE_BACKLOG_LIMIT', integer(0, 1_000_000), 1_000),
    intakeBacklogWaitMs: read('INTAKE_BACKLOG_WAIT_MS', integer(100, 600_000), 10_000),
    twilio: undefined,
    simulatorPort: read('SIMULATOR_PORT', integer(0, 65535), 3001),
    carrierTimeoutMs: read('CARRIER_TIMEOUT_MS', integer(100, 120_000), 10_000),
    sendLeaseMs: read('SEND_LEASE_MS', integer(1_000, 3_600_000), 120_000),
    retryBaseMs: read('SEND_RETRY_BASE_MS', integer(10, 3_600_000), 30_000),
    maintenanceIntervalMs: read('MAINTENANCE_INTERVAL_MS', integer(250, 3_600_000), 60_000),
    reconciliationHorizonMs: read('RECONCILIATION_HORIZON_MS', integer(1_000, 30 * 86_400_000), 86_400_000),
    lookupGraceMs: 0,
    simulatorSeed: read('SIMULATOR_SEED', integer(0, 2 ** 31 - 1), undefined),
    stripe: undefined,
    paymentsSimulatorPort: read('PAYMENTS_SIMULATOR_PORT', integer(0, 65535), 3002),
    pastDueGraceMs: read('BILLING_PAST_DUE_GRACE_HOURS', integer(0, 24 * 90), 72) * 3_600_000,
    catalogJson: read('BILLING_CATALOG', nonEmpty, undefined),
  };

  // A running job may hold a transaction while it needs a second connection
  // (a claim takes its sender slots in statements of their own): with every
  // connection held by such jobs, each would wait for the pool for good, a
  // wait PostgreSQL cannot see. Two more than the jobs leave room for them
  // and for the dispatcher's and job queue's own statements.
  if (config.dbPoolSize < config.workerConcurrency + 2) {
    problems.push({
      variable: 'DB_POOL_SIZE',
      problem: `must be at least WORKER_CONCURRENCY + 2 (${config.workerConcurrency + 2}): a running job may hold one connection while it waits for another`,
    });
  }

  // "Not at the carrier" is proof only once any call of a live worker has
  // ended: its timeout plus the longest send-slot wait (2 s), with margin.
  const minGrace = config.carrierTimeoutMs + 2_000 + 1_000;
  config.lookupGraceMs = read('LOOKUP_GRACE_MS', integer(1_000, 86_400_000), Math.max(60_000, config.carrierTimeoutMs + 12_000));
  if (config.lookupGraceMs < minGrace) {
    problems.push({ variable: 'LOOKUP_GRACE_MS', problem: `must be at least CARRIER_TIMEOUT_MS + 3000 (${minGrace}): a live call may still reach the carrier` });
  }

  const stripeKey = read('STRIPE_SECRET_KEY', nonEmpty, undefined);
  const stripeWebhook = read('STRIPE_WEBHOOK_SECRET', nonEmpty, undefined);
  const stripeUrl = read('STRIPE_API_URL', url(['http:', 'https:']), undefined);
  if ((stripeKey === undefined) !== (stripeWebhook === undefined)) {
    problems.push({
      variable: stripeKey === undefined ? 'STRIPE_SECRET_KEY' : 'STRIPE_WEBHOOK_SECRET',
      problem: 'STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET go together: set both or neither',
    });
  }
  config.stripe = stripeKey !== undefined && stripeWebhook !== undefined ? { secretKey: stripeKey, webhookSecret: stripeWebhook, apiUrl: stripeUrl } : undefined;
  if (config.catalogJson !== undefined) {
    try {
      const c = JSON.parse(config.catalogJson) as { packs?: unknown; plans?: unknown };
      if (!Array.isArray(c.packs) || !Array.isArray(c.plans)) throw new Error('needs "packs" and "plans" arrays');
    } catch (err) {
      problems.push({ variable: 'BILLING_CATALOG', problem: `must be JSON {"packs": [...], "plans": [...]}: ${(err as Error).message}` });
    }
  }

  const sid = read('TWILIO_ACCOUNT_SID', nonEmpty, undefined);
  const token = read('TWILIO_AUTH_TOKEN', nonEmpty, undefined);
  const apiUrl = read('TWILIO_API_URL', url(['http:', 'https:']), undefined);
  if ((sid === undefined) !== (token === undefined)) {
    problems.push({
      variable: sid === undefined ? 'TWILIO_ACCOUNT_SID' : 'TWILIO_AUTH_TOKEN',
      problem: 'TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN go together: set both or neither',
    });
  }
  if (sid !== undefined && !/^AC[0-9a-fA-F]{32}$/.test(sid)) {
    problems.push({ variable: 'TWILIO_ACCOUNT_SID', problem: 'must be "AC" followed by 32 hex characters' });
  }
  config.twilio = sid !== undefined && token !== undefined ? { accountSid: sid, authToken: token, apiUrl } : undefined;

  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** The variables `loadConfig` reads, with their meaning and default, for `--help` and the README. */
export const CONFIG_DOC: readonly { variable: string; default: string; meaning: string }[] = [
  {
    variable: 'DATABASE_URL',
    default: '(embedded)',
    meaning: 'PostgreSQL ≥ 14 to use instead of the embedded server',
  },
  {
    variable: 'CREDENCE_HOME',
    default: './.credence',
    meaning: 'directory for the embedded database and local state',
  },
  { variable: 'HOST', default: '127.0.0.1', meaning: 'address the HTTP API listens on' },
  { variable: 'PORT', default: '3000', meaning: 'port the HTTP API listens on' },
  {
    variable: 'PUBLIC_URL',
    default: 'http://localhost:$PORT',
    meaning: 'URL the outside world uses to reach the API (webhooks)',
  },
  { variable: 'LOG_LEVEL', default: 'info', meaning: LOG_LEVELS.join(' | ') },
  { variable: 'WORKER_CONCURRENCY', default: '8', meaning: 'jobs one worker process runs at once' },
  {
    variable: 'EMBEDDED_PG_PORT',
    default: '54329',
    meaning: 'port of the embedded PostgreSQL (loopback only)',
  },
  { variable: 'DB_POOL_SIZE', default: '20', meaning: 'database connections per process (at least WORKER_CONCURRENCY + 2)' },
  {
    variable: 'DB_PREPARED_STATEMENTS',
    default: 'on',
    meaning: 'on: frequent statements run as named prepared statements (planned once per connection); off behind a transaction-pooling proxy',
  },
  {
    variable: 'DB_GENERIC_PLANS',
    default: 'on',
    meaning: "on: the send path's transactions reuse one plan per statement instead of planning at each execution (needs DB_PREPARED_STATEMENTS=on); off: PostgreSQL chooses",
  },
  {
    variable: 'SHUTDOWN_TIMEOUT_MS',
    default: '15000',
    meaning: 'how long a shutdown waits for in-flight work',
  },
  {
    variable: 'INTAKE_BACKLOG_LIMIT',
    default: '1000',
    meaning: "POST /v1/messages waits while this many of the organization's API messages are due and not yet at the carrier (0: no limit)",
  },
  { variable: 'INTAKE_BACKLOG_WAIT_MS', default: '10000', meaning: 'how long such a request waits for room before a 429 with Retry-After (nothing stored)' },
  { variable: 'TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN', default: '(simulator)', meaning: 'send through this Twilio account; unset = the built-in carrier simulator' },
  { variable: 'TWILIO_API_URL', default: 'https://api.twilio.com', meaning: 'Twilio REST base URL (point it at a simulator)' },
  { variable: 'SIMULATOR_PORT', default: '3001', meaning: 'port of the built-in carrier simulator (loopback)' },
  { variable: 'CARRIER_TIMEOUT_MS', default: '10000', meaning: 'carrier request timeout; no answer by then = outcome unknown' },
  { variable: 'SEND_LEASE_MS', default: '120000', meaning: 'how long a claimed message may stay sending before reconciliation asks the carrier' },
  { variable: 'SEND_RETRY_BASE_MS', default: '30000', meaning: 'first retry delay after a transient carrier error (doubles, ±20 % jitter, capped at 10×)' },
  { variable: 'MAINTENANCE_INTERVAL_MS', default: '60000', meaning: 'how often reconciliation and the sweep run (below 60000: a timer in each worker)' },
  { variable: 'RECONCILIATION_HORIZON_MS', default: '86400000', meaning: 'an unknown outcome with no evidence this long is failed, its credits captured' },
  { variable: 'LOOKUP_GRACE_MS', default: 'max(60000, CARRIER_TIMEOUT_MS + 12000)', meaning: 'after a claim, how long "not at the carrier" must last to prove a message never left' },
  { variable: 'SIMULATOR_SEED', default: '(random)', meaning: "seed of the simulators' faults, for replayable runs" },
  { variable: 'STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET', default: '(simulator)', meaning: 'bill through this Stripe account; unset = the built-in payments simulator' },
  { variable: 'STRIPE_API_URL', default: 'https://api.stripe.com', meaning: 'Stripe API base URL (point it at a simulator)' },
  { variable: 'PAYMENTS_SIMULATOR_PORT', default: '3002', meaning: 'port of the built-in payments simulator (loopback)' },
  { variable: 'BILLING_PAST_DUE_GRACE_HOURS', default: '72', meaning: 'how long a past_due subscription may still send' },
  { variable: 'BILLING_CATALOG', default: '(Starter/Standard/Large, Free/Pro/Ultra)', meaning: 'packs and plans as JSON {"packs":[…],"plans":[…]}' },
];
