import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.ts';

describe('configuration', () => {
  it('has working defaults with an empty environment', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c).toMatchObject({
      databaseUrl: undefined,
      home: '/srv/app/.credence',
      port: 3000,
      host: '127.0.0.1',
      publicUrl: 'http://localhost:3000',
      logLevel: 'info',
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads and converts every variable', () => {
    const c = loadConfig(
      {
        DATABASE_URL: 'postgres://u:p@db:5432/x',
        CREDENCE_HOME: '/var/lib/credence',
        PORT: '8080',
        PUBLIC_URL: 'https://sms.example.com/',
        LOG_LEVEL: 'debug',
        WORKER_CONCURRENCY: '4',
      },
      '/',
    );
    expect(c).toMatchObject({
      databaseUrl: 'postgres://u:p@db:5432/x',
      home: '/var/lib/credence',
      port: 8080,
      publicUrl: 'https://sms.example.com',
      logLevel: 'debug',
      workerConcurrency: 4,
    });
  });

  it('names every bad variable and what is wrong, all at once', () => {
    try {
      loadConfig({
        PORT: 'eighty',
        DATABASE_URL: 'mysql://x',
        LOG_LEVEL: 'loud',
        WORKER_CONCURRENCY: '0',
      });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const problems = (err as ConfigError).problems;
      expect(problems.map((p) => p.variable).sort()).toEqual([
        'DATABASE_URL',
        'LOG_LEVEL',
        'PORT',
        'WORKER_CONCURRENCY',
      ]);
      expect((err as Error).message).toContain('PORT: must be an integer, got "eighty"');
      expect((err as Error).message).toContain('WORKER_CONCURRENCY: must be between 1 and 200');
    }
  });

  it('the fast-clock knobs: retries, maintenance, horizon and a look-up grace never shorter than a live call', () => {
    const c = loadConfig({ SEND_RETRY_BASE_MS: '400', MAINTENANCE_INTERVAL_MS: '1000', RECONCILIATION_HORIZON_MS: '90000', CARRIER_TIMEOUT_MS: '2000', LOOKUP_GRACE_MS: '5000', SIMULATOR_SEED: '7' });
    expect(c).toMatchObject({ retryBaseMs: 400, maintenanceIntervalMs: 1000, reconciliationHorizonMs: 90_000, lookupGraceMs: 5000, simulatorSeed: 7 });
    expect(loadConfig({})).toMatchObject({ retryBaseMs: 30_000, maintenanceIntervalMs: 60_000, reconciliationHorizonMs: 86_400_000, lookupGraceMs: 60_000, simulatorSeed: undefined });
    // derived from the carrier timeout when it is long
    expect(loadConfig({ CARRIER_TIMEOUT_MS: '60000' }).lookupGraceMs).toBe(72_000);
    // "not at the carrier" must not be trusted while a live call may still get there
    expect(() => loadConfig({ CARRIER_TIMEOUT_MS: '10000', LOOKUP_GRACE_MS: '5000' })).toThrow(/LOOKUP_GRACE_MS: must be at least CARRIER_TIMEOUT_MS \+ 3000 \(13000\)/);
    expect(() => loadConfig({ MAINTENANCE_INTERVAL_MS: '10' })).toThrow(/MAINTENANCE_INTERVAL_MS: must be between 250/);
  });

  it('a pool with room for every running job to take a second connection', () => {
    expect(loadConfig({ WORKER_CONCURRENCY: '18', DB_POOL_SIZE: '20' })).toMatchObject({ workerConcurrency: 18, dbPoolSize: 20 });
    // every connection held by a claim that waits for another: the pool would wait for good
    expect(() => loadConfig({ WORKER_CONCURRENCY: '20', DB_POOL_SIZE: '20' })).toThrow(/DB_POOL_SIZE: must be at least WORKER_CONCURRENCY \+ 2 \(22\)/);
    expect(() => loadConfig({ WORKER_CONCURRENCY: '30' })).toThrow(/DB_POOL_SIZE/);
  });

  it('the CLI stops at start-up with the variable named, before touching anything', () => {
    const result = spawnSync(process.execPath, ['bin/credence.mjs', 'start'], {
      env: { PATH: process.env.PATH, PORT: '99999', CREDENCE_HOME: '/nonexistent/never-created' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.status).toBe(78);
    expect(result.stderr).toContain('PORT: must be between 0 and 65535, got 99999');
  });

  it('--help works for the command and each subcommand', () => {
    for (const args of [
      ['--help'],
      ['start', '--help'],
      ['api', '--help'],
      ['worker', '--help'],
      ['migrate', '--help'],
    ]) {
      const result = spawnSync(process.execPath, ['bin/credence.mjs', ...args], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(result.status, args.join(' ')).toBe(0);
      expect(result.stdout).toContain('DATABASE_URL');
    }
  });
});
