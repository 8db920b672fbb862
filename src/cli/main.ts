import { CONFIG_DOC, type Config, ConfigError, loadConfig } from '../config.ts';
import type { Roles } from '../main.ts';
import { createLogger, type Logger } from '../shared/logger.ts';

const COMMANDS: Record<string, { summary: string; usage: string }> = {
  start: {
    summary:
      'Run everything in one process: database (embedded unless DATABASE_URL), migrations, API and worker',
    usage: 'credence start',
  },
  api: { summary: 'Run the HTTP API only', usage: 'credence api' },
  worker: {
    summary: 'Run a job worker only (start as many as you like against one database)',
    usage: 'credence worker',
  },
  migrate: { summary: 'Apply pending database migrations (idempotent)', usage: 'credence migrate' },
  simulator: {
    summary:
      'Run the Twilio-compatible carrier simulator alone (credentials in $CREDENCE_HOME/simulator.json; faults from SIMULATOR_FAULTS as JSON)',
    usage: 'credence simulator',
  },
  'payments-simulator': {
    summary: 'Run the Stripe-compatible payments simulator alone (secrets in $CREDENCE_HOME/payments-simulator.json; events to PUBLIC_URL/webhooks/stripe)',
    usage: 'credence payments-simulator',
  },
  ledger: {
    summary: 'Ledger tools: `credence ledger verify` recomputes every account from its entries; non-zero exit on any mismatch',
    usage: 'credence ledger verify',
  },
  'operator-key': {
    summary: 'Create a new operator API key (for an operator who lost the bootstrap key)',
    usage: 'credence operator-key [name]',
  },
};

function configHelp(): string {
  const width = Math.max(...CONFIG_DOC.map((d) => d.variable.length));
  return CONFIG_DOC.map(
    (d) => `  ${d.variable.padEnd(width)}  ${d.meaning} (default: ${d.default})`,
  ).join('\n');
}

function help(command?: string): string {
  if (command !== undefined && COMMANDS[command] !== undefined) {
    const c = COMMANDS[command];
    return `Usage: ${c.usage}\n\n${c.summary}.\n\nConfiguration (environment variables):\n${configHelp()}\n`;
  }
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return `Credence — SMS that stays correct when things go wrong.

Usage: credence <command> [--help]

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
  .join('\n')}

Configuration (environment variables):
${configHelp()}
`;
}

function banner(url: string | undefined, roles: Roles, operatorKey: string | undefined, simulatorUrl: string | undefined, paymentsUrl?: string): string {
  const lines = ['', 'Credence is running.'];
  if (url !== undefined) {
    lines.push(
      `  API:      ${url}`,
      `  Docs:     ${url}/docs  (OpenAPI: ${url}/openapi.json)`,
      `  Health:   ${url}/healthz`,
    );
  }
  if (roles.worker) lines.push('  Worker:   running');
  if (simulatorUrl !== undefined) lines.push(`  Carrier:  built-in simulator at ${simulatorUrl} (no Twilio credentials set; log at ${simulatorUrl}/_sim/log)`);
  if (paymentsUrl !== undefined) lines.push(`  Payments: built-in Stripe simulator at ${paymentsUrl} (no Stripe key set; checkout pages at ${paymentsUrl}/pay/…)`);
  if (operatorKey !== undefined) {
    lines.push(
      '',
      'Bootstrap operator API key (shown once, store it now):',
      `  ${operatorKey}`,
      '',
      'Try:',
      `  curl -H "Authorization: Bearer ${operatorKey}" ${url ?? ''}/v1/me`,
    );
  }
  lines.push('', 'Press Ctrl-C to stop.', '');
  return lines.join('\n');
}

/**
 * Resolves 0 once `stop` has run after a SIGINT or SIGTERM. Call it before
 * printing that the process is ready: whoever waits for that line may send a
 * signal at once, and until a handler exists a SIGTERM kills the process
 * outright (a child is often preempted right after the write that wakes its
 * parent).
 */
function untilSignal(stop: () => Promise<void>): Promise<number> {
  return new Promise<number>((resolve) => {
    const onSignal = () => void stop().then(() => resolve(0));
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
}

async function serve(config: Config, log: Logger, roles: Roles): Promise<number> {
  const { startCredence } = await import('../main.ts');
  const running = await startCredence(config, log, roles);
  const stopped = new Promise<number>((resolve) => {
    let shuttingDown = false;
    const shutdown = (reason: string, code: number) => {
      if (shuttingDown) {
        if (reason === 'component failure') return;
        log.warn('second signal: stopping now');
        void Promise.resolve(running.database.embedded?.stop('fast')).finally(() => resolve(130));
        return;
      }
      shuttingDown = true;
      log.info({ reason }, 'shutting down');
      const timer = setTimeout(() => {
        log.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown timed out');
        void Promise.resolve(running.database.embedded?.stop('fast')).finally(() => resolve(1));
      }, config.shutdownTimeoutMs);
      void running.stop().then(() => {
        clearTimeout(timer);
        log.info('stopped');
        resolve(code);
      });
    };
    process.on('SIGINT', () => shutdown('SIGINT', 0));
    process.on('SIGTERM', () => shutdown('SIGTERM', 0));
    void running.failed.then((err) => {
      if (shuttingDown) return;
      log.fatal({ err }, 'a component failed');
      shutdown('component failure', 1);
    });
  });
  // Only now, with the handlers in place, say so (see untilSignal).
  process.stdout.write(banner(running.url, roles, running.operatorKey?.key, running.simulator?.url, running.paymentsSimulator?.url));
  return stopped;
}

export async function main(argv: string[]): Promise<number> {
  const [command = 'start', ...rest] = argv;
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(help(rest[0]));
    return 0;
  }
  if (COMMANDS[command] === undefined) {
    process.stderr.write(`Unknown command "${command}".\n\n${help()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(help(command));
    return 0;
  }

  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`credence: ${err.message}\n`);
      return 78; // EX_CONFIG
    }
    throw err;
  }
  const log = createLogger(config.logLevel);

  switch (command) {
    case 'start':
      return serve(config, log, { api: true, worker: true, simulator: config.twilio === undefined });
    case 'api':
      return serve(config, log, { api: true, worker: false });
    case 'worker':
      return serve(config, log, { api: false, worker: true });
    case 'migrate': {
      const { openDatabase } = await import('../main.ts');
      const { migrate } = await import('../db/migrate.ts');
      const database = await openDatabase(config, log);
      try {
        const result = await migrate(database.pool);
        process.stdout.write(
          `Migrations: ${result.applied.length} applied${result.applied.length ? ` (${result.applied.join(', ')})` : ''}, ${result.alreadyApplied} already applied.\n`,
        );
        return 0;
      } finally {
        await database.close();
      }
    }
    case 'operator-key': {
      const { openDatabase } = await import('../main.ts');
      const { migrate } = await import('../db/migrate.ts');
      const { createOperatorKeyFromCli } = await import('../tenancy/index.ts');
      const database = await openDatabase(config, log);
      try {
        await migrate(database.pool);
        const created = await createOperatorKeyFromCli(
          database.db,
          rest[0] ?? 'operator key (cli)',
        );
        process.stdout.write(`New operator API key (shown once):\n  ${created.key}\n`);
        return 0;
      } finally {
        await database.close();
      }
    }
    case 'simulator': {
      const { startSimulatorProcess } = await import('../main.ts');
      const sim = await startSimulatorProcess(config, log, process.env.SIMULATOR_FAULTS);
      const stopped = untilSignal(() => sim.stop());
      process.stdout.write(
        `Carrier simulator listening on ${sim.url}\n  account: ${sim.accounts[0]?.sid}\n  log:     ${sim.url}/_sim/log\n  faults:  ${sim.url}/_sim/faults\nPress Ctrl-C to stop.\n`,
      );
      return stopped;
    }
    case 'payments-simulator': {
      const { startPaymentsSimulatorProcess } = await import('../main.ts');
      const sim = await startPaymentsSimulatorProcess(config);
      const stopped = untilSignal(() => sim.stop());
      process.stdout.write(`Payments simulator listening on ${sim.url}\n  events: ${sim.url}/_sim/events\nPress Ctrl-C to stop.\n`);
      return stopped;
    }
    case 'ledger': {
      if (rest[0] !== 'verify') {
        process.stderr.write(`Usage: ${COMMANDS.ledger!.usage}\n`);
        return 2;
      }
      const { openDatabase } = await import('../main.ts');
      const { verifyLedger, recordVerification } = await import('../credits/index.ts');
      const database = await openDatabase(config, log);
      try {
        const report = await verifyLedger(database.db);
        await recordVerification(database.db, report);
        for (const m of report.mismatches) {
          process.stdout.write(
            `MISMATCH ${m.organization_id} ${m.field}: stored=${m.stored} computed=${m.computed}\n`,
          );
        }
        process.stdout.write(
          `ledger verify: accounts=${report.accounts_checked} mismatches=${report.mismatches.length}\n`,
        );
        return report.mismatches.length === 0 ? 0 : 1;
      } finally {
        await database.close();
      }
    }
    default:
      return 2;
  }
}
