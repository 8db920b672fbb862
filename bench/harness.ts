import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDb, createPool, type Db } from '../src/db/db.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';
import type pg from 'pg';
import { sql } from 'kysely';

/**
 * A fresh PostgreSQL for a benchmark: the embedded server with its default
 * (durable) settings in a temporary directory, or BENCH_DATABASE_URL.
 */
export async function benchDatabase(poolSize = 10): Promise<{ db: Db; pool: pg.Pool; url: string; close(): Promise<void> }> {
  const log = createLogger('warn');
  let url = process.env.BENCH_DATABASE_URL;
  let stop = async () => {};
  if (!url) {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-bench-'));
    await fs.chmod(dir, 0o755);
    // BENCH_DURABILITY=fast turns fsync off, to separate CPU cost from disk flushes.
    const durability = process.env.BENCH_DURABILITY === 'fast' ? 'fast' : 'durable';
    // BENCH_PG_STATS=1 loads pg_stat_statements: printStatementStats() shows where the queries went.
    const settings = process.env.BENCH_PG_STATS ? ['shared_preload_libraries=pg_stat_statements', 'pg_stat_statements.track=all', 'pg_stat_statements.track_planning=on'] : [];
    // BENCH_PG_SETTINGS="name=value,…": more server settings, to try a tuning
    settings.push(...(process.env.BENCH_PG_SETTINGS ?? '').split(',').filter(Boolean));
    const server = await startEmbeddedPostgres({ dir, port: await freePort(), log, durability, settings });
    url = server.url;
    stop = async () => {
      await server.stop('fast');
      await fs.rm(dir, { recursive: true, force: true });
    };
  }
  const pool = createPool(url, poolSize);
  await migrate(pool);
  const db = createDb(pool);
  if (process.env.BENCH_PG_STATS) await sql`create extension if not exists pg_stat_statements`.execute(db);
  return {
    db,
    pool,
    url,
    close: async () => {
      await db.destroy();
      await stop();
    },
  };
}

/** A message's event trail on one line: "HH:MM:SS.mmm event→status (reason), …". */
export async function messageTrail(db: Db, messageId: string): Promise<string> {
  const { rows } = await sql<{ at: Date; event: string; to_status: string; reason: string | null }>`
    select at, event, to_status, reason from message_events where message_id = ${messageId} order by seq`.execute(db);
  return rows.map((t) => `${t.at.toISOString().slice(11, 23)} ${t.event}→${t.to_status}${t.reason ? ` (${t.reason})` : ''}`).join(', ');
}

/** With BENCH_PG_STATS: the statements by total time, with calls per unit of work (e.g. per message). */
export async function printStatementStats(db: Db, units: number, top = 25): Promise<void> {
  if (!process.env.BENCH_PG_STATS) return;
  const { rows } = await sql<{ calls: string; total_ms: number; plan_ms: number; query: string }>`
    select calls::text, total_exec_time as total_ms, total_plan_time as plan_ms, regexp_replace(query, '[[:space:]]+', ' ', 'g') as query
    from pg_stat_statements order by total_exec_time + total_plan_time desc limit ${top}`.execute(db);
  const { rows: xact } = await sql<{ commits: string; sessions: string }>`
    select xact_commit::text as commits, sessions::text as sessions from pg_stat_database where datname = current_database()`.execute(db);
  const { rows: sum } = await sql<{ calls: string; exec_ms: number; plan_ms: number }>`
    select sum(calls)::text as calls, sum(total_exec_time) as exec_ms, sum(total_plan_time) as plan_ms from pg_stat_statements`.execute(db);
  process.stdout.write(
    `statements: ${(Number(sum[0]?.calls ?? 0) / units).toFixed(2)} per unit, execution ${sum[0]?.exec_ms.toFixed(0)} ms, planning ${sum[0]?.plan_ms.toFixed(0)} ms in all\n`,
  );
  process.stdout.write(`statements (per unit = per ${units}); commits per unit ${(Number(xact[0]?.commits ?? 0) / units).toFixed(2)}, connections opened ${xact[0]?.sessions ?? '?'} (whole run)\n`);
  const { rows: wal } = await sql<{ records: string; fpi: string; bytes: string }>`
    select wal_records::text as records, wal_fpi::text as fpi, wal_bytes::text as bytes from pg_stat_wal`.execute(db);
  const w = wal[0];
  if (w !== undefined) {
    process.stdout.write(
      `wal per unit (whole run, setup included): ${(Number(w.records) / units).toFixed(1)} records, ${(Number(w.fpi) / units).toFixed(2)} full-page images, ${(Number(w.bytes) / units / 1024).toFixed(1)} KiB\n`,
    );
  }
  // autovacuum's share: its CPU shows as the postmaster's (its workers exit)
  const { rows: vacuumed } = await sql<{ relname: string; vacuums: number; analyzes: number; live: string; dead: string }>`
    select relname, autovacuum_count::int as vacuums, autoanalyze_count::int as analyzes, n_live_tup::text as live, n_dead_tup::text as dead
    from pg_stat_all_tables where autovacuum_count + autoanalyze_count > 0 order by autovacuum_count + autoanalyze_count desc limit 10`.execute(db);
  process.stdout.write(
    `autovacuum (whole run): ${vacuumed.map((t) => `${t.relname} ${t.vacuums} vacuums, ${t.analyzes} analyzes (live ${t.live}, dead ${t.dead})`).join('; ') || 'none'}\n`,
  );
  const { rows: frequent } = await sql<{ calls: string; total_ms: number; plan_ms: number; query: string }>`
    select s.calls::text, total_exec_time as total_ms, total_plan_time as plan_ms, regexp_replace(query, '[[:space:]]+', ' ', 'g') as query
    from pg_stat_statements s order by s.calls desc limit 8`.execute(db);
  const print = (list: typeof rows) => {
    for (const r of list) {
      process.stdout.write(
        `${(Number(r.calls) / units).toFixed(3).padStart(8)} calls ${r.total_ms.toFixed(0).padStart(7)} ms (plan ${r.plan_ms.toFixed(0).padStart(5)} ms)  ${r.query.slice(0, 130)}\n`,
      );
    }
  };
  print(rows);
  process.stdout.write('the most frequent:\n');
  print(frequent);
  const { rows: reads } = await sql<{ calls: string; blocks: string; query: string }>`
    select s.calls::text, (shared_blks_hit + shared_blks_read)::text as blocks, regexp_replace(query, '[[:space:]]+', ' ', 'g') as query
    from pg_stat_statements s order by shared_blks_hit + shared_blks_read desc limit 8`.execute(db);
  process.stdout.write('the most buffers read (hit or not):\n');
  for (const r of reads) {
    process.stdout.write(
      `${(Number(r.calls) / units).toFixed(3).padStart(8)} calls ${(Number(r.blocks) / Number(r.calls)).toFixed(0).padStart(7)} blocks/call  ${r.query.slice(0, 130)}\n`,
    );
  }
}

export function rate(n: number, ms: number): number {
  return Math.round((n / ms) * 1000);
}

/**
 * CPU seconds used so far by each kind of process on this machine (user +
 * system, with what exited children handed to their parent): `postgres`,
 * the credence commands by name (`api`, `worker`, `simulator`), and `bench`
 * for this process. Two snapshots' difference shows where a run's CPU went.
 */
export async function cpuSnapshot(): Promise<Map<string, number>> {
  const ticks = 100; // USER_HZ on Linux
  const out = new Map<string, number>();
  const pids = (await fs.readdir('/proc')).filter((d) => /^\d+$/.test(d));
  for (const pid of pids) {
    try {
      const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime, stime, cutime, cstime are fields 14–17 (index 11–14 after the command)
      const cpu = (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / ticks;
      const cmd = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
      const label =
        Number(pid) === process.pid
          ? 'bench'
          : cmd[0]?.startsWith('postgres') || cmd[0]?.endsWith('/postgres')
            ? 'postgres'
            : (['api', 'worker', 'simulator'].find((c) => cmd.includes(c)) ?? undefined);
      if (label !== undefined) out.set(label, (out.get(label) ?? 0) + cpu);
      if (label === 'postgres') {
        // PostgreSQL titles its processes: "postgres: walwriter", "postgres: user db host(port) idle", …
        const title = cmd[0] ?? '';
        const kind = /autovacuum/.test(title)
          ? 'autovacuum'
          : /walwriter|checkpointer|background writer|logger|launcher/.test(title)
            ? 'background'
            : /^postgres: \S+ \S+ /.test(title)
              ? 'backends'
              : 'postmaster'; // the server itself, holding the CPU of backends that have exited
        out.set(`pg:${kind}`, (out.get(`pg:${kind}`) ?? 0) + cpu);
      }
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

export function printCpu(before: Map<string, number>, after: Map<string, number>, units: number): void {
  const all = [...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const).filter(([, v]) => v > 0);
  const parts = all.filter(([k]) => !k.startsWith('pg:'));
  const total = parts.reduce((s, [, v]) => s + v, 0);
  process.stdout.write(
    `cpu: ${parts.map(([k, v]) => `${k}=${v.toFixed(1)}s`).join(' ')} total=${total.toFixed(1)}s (${((total / units) * 1e6).toFixed(0)} µs per unit)\n`,
  );
  const pg = all.filter(([k]) => k.startsWith('pg:'));
  if (pg.length > 0) process.stdout.write(`cpu of postgres: ${pg.map(([k, v]) => `${k.slice(3)}=${v.toFixed(1)}s`).join(' ')}\n`);
}

/**
 * The warnings and errors a child process logged (pino JSON, level 40 and
 * up), counted by message, so a run that recovered from failures says so.
 */
export function printLoggedProblems(name: string, output: string): void {
  const counts = new Map<string, number>();
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string; err?: unknown };
      if ((entry.level ?? 0) < 40) continue;
      const err = typeof entry.err === 'string' ? entry.err : ((entry.err as { message?: string } | undefined)?.message ?? '');
      const key = `${entry.msg ?? ''}${err ? `: ${err}` : ''}`.slice(0, 160);
      counts.set(key, (counts.get(key) ?? 0) + 1);
    } catch {
      // not a log line
    }
  }
  if (counts.size === 0) return;
  process.stdout.write(`${name} logged problems:\n`);
  for (const [msg, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 8)) process.stdout.write(`  ${String(n).padStart(6)} × ${msg}\n`);
}

/**
 * The simulator's status callbacks so far: posted, HTTP attempts, failed
 * attempts (an error answer, a timeout or a refused connection: each is
 * tried again, which costs the simulator and the api a request more).
 */
export async function printCallbackStats(simUrl: string): Promise<void> {
  const stats = (await (await fetch(`${simUrl}/_sim/stats`)).json()) as {
    callbacks: { posted: number; attempts: number; failedAttempts: number; gaveUp: number };
  };
  const c = stats.callbacks;
  process.stdout.write(`status callbacks: ${c.posted} posted, ${c.attempts} attempts, ${c.failedAttempts} failed attempts, ${c.gaveUp} given up\n`);
}
