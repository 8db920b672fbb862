/**
 * npm run bench — runs the ledger, send and campaign benchmarks one after
 * another (each as its own child process, as its npm script would), prints
 * one table of every figure against its target, and writes
 * bench/results.json. Exits non-zero when a benchmark fails (non-zero exit
 * or no parsable last line); a target that is missed is reported, not a
 * failure of the run.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export type BenchmarkName = 'ledger' | 'send' | 'campaign';
export type Comparison = '>=' | '<=';

/** One figure a benchmark prints on its last line, with its target if the issue sets one. */
interface FigureSpec {
  benchmark: BenchmarkName;
  figure: string;
  unit: string;
  target: { value: number; comparison: Comparison } | null;
}

/** The figures and targets of issues 3 (ledger), 4 (send) and 6 (campaign), on the 2-core machine. */
export const FIGURES: readonly FigureSpec[] = [
  { benchmark: 'ledger', figure: 'batched', unit: 'reservations/s', target: { value: 30_000, comparison: '>=' } },
  { benchmark: 'ledger', figure: 'single', unit: 'reservations/s', target: null },
  { benchmark: 'ledger', figure: 'ratio', unit: 'batched/single', target: { value: 20, comparison: '>=' } },
  { benchmark: 'send', figure: 'throughput', unit: 'msgs/s', target: null },
  { benchmark: 'send', figure: 'p50_ms', unit: 'ms', target: null },
  { benchmark: 'send', figure: 'p99_ms', unit: 'ms', target: { value: 250, comparison: '<=' } },
  { benchmark: 'send', figure: 'ceiling', unit: 'msgs/s', target: null },
  { benchmark: 'send', figure: 'ratio', unit: 'throughput/ceiling', target: { value: 0.5, comparison: '>=' } },
  { benchmark: 'campaign', figure: 'throughput', unit: 'msgs/s', target: { value: 3_000, comparison: '>=' } },
  { benchmark: 'campaign', figure: 'ceiling', unit: 'msgs/s', target: null },
  { benchmark: 'campaign', figure: 'ratio', unit: 'throughput/ceiling', target: { value: 0.5, comparison: '>=' } },
  { benchmark: 'campaign', figure: 'peak_rss_mb', unit: 'MB', target: { value: 400, comparison: '<=' } },
];

const BENCHMARKS: readonly BenchmarkName[] = ['ledger', 'send', 'campaign'];

export interface FigureResult {
  benchmark: BenchmarkName;
  figure: string;
  value: number | null;
  unit: string;
  target: number | null;
  comparison: Comparison | null;
  /** ≥ 1 means the target is met, whichever way the comparison goes. */
  ratio: number | null;
  met: boolean | null;
}

/**
 * The figures of a benchmark's last line, e.g.
 * `ledger: batched=42747 single=535 ratio=79.9` → { batched: 42747, … };
 * undefined when the last non-empty line is not that benchmark's summary.
 */
export function parseSummary(benchmark: BenchmarkName, output: string): Record<string, number> | undefined {
  const last = output.trimEnd().split('\n').at(-1)?.trim() ?? '';
  const prefix = `${benchmark}:`;
  if (!last.startsWith(prefix)) return undefined;
  const figures: Record<string, number> = {};
  for (const pair of last.slice(prefix.length).trim().split(/\s+/)) {
    const m = /^([a-z0-9_]+)=(\S+)$/.exec(pair);
    if (!m) return undefined;
    figures[m[1]!] = Number(m[2]);
  }
  return Object.keys(figures).length > 0 ? figures : undefined;
}

/** value/target for a floor, target/value for a ceiling: ≥ 1 always means met. */
export function targetRatio(value: number, target: number, comparison: Comparison): number {
  if (comparison === '>=') return value / target;
  return value > 0 ? target / value : Number.POSITIVE_INFINITY;
}

/** Every figure of one benchmark; a figure missing from `parsed` (or not a number) gets value null and met false. */
export function evaluate(benchmark: BenchmarkName, parsed: Record<string, number> | undefined): FigureResult[] {
  return FIGURES.filter((f) => f.benchmark === benchmark).map((f) => {
    const raw = parsed?.[f.figure];
    const value = raw !== undefined && Number.isFinite(raw) ? raw : null;
    const ratio = value !== null && f.target ? targetRatio(value, f.target.value, f.target.comparison) : null;
    return {
      benchmark,
      figure: f.figure,
      value,
      unit: f.unit,
      target: f.target?.value ?? null,
      comparison: f.target?.comparison ?? null,
      ratio,
      met: f.target ? ratio !== null && ratio >= 1 : null,
    };
  });
}

function formatNumber(n: number): string {
  return Number.isInteger(n) ? n.toLocaleString('en-US') : String(n);
}

/** The table printed at the end: figure | value | target | ratio | met. */
export function formatTable(results: readonly FigureResult[]): string {
  const rows = results.map((r) => [
    `${r.benchmark} ${r.figure}`,
    r.value === null ? 'FAILED' : `${formatNumber(r.value)} ${r.unit}`,
    r.target === null || r.comparison === null ? '—' : `${r.comparison === '>=' ? '≥' : '≤'} ${formatNumber(r.target)}`,
    r.ratio === null ? '—' : r.ratio.toFixed(2),
    r.met === null ? '—' : r.met ? 'yes' : 'NO',
  ]);
  const header = ['figure', 'value', 'target', 'ratio (≥1 = met)', 'met?'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n');
}

interface RunOutcome {
  benchmark: BenchmarkName;
  command: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  durationS: number;
  lastLine: string | null;
  error: string | null;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let current: ReturnType<typeof spawn> | undefined;
let interrupted = false;

/** Runs `node --import tsx bench/<name>.ts` with this process's env, echoing its stdout while keeping it. */
function runBenchmark(benchmark: BenchmarkName): Promise<{ outcome: RunOutcome; figures: FigureResult[] }> {
  const args = ['--import', 'tsx', `bench/${benchmark}.ts`];
  const started = Date.now();
  process.stdout.write(`\n=== ${benchmark}: node ${args.join(' ')} ===\n`);
  return new Promise((resolve) => {
    let out = '';
    const child = spawn(process.execPath, args, { cwd: root, env: process.env, stdio: ['ignore', 'pipe', 'inherit'] });
    current = child;
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      process.stdout.write(chunk);
    });
    const finish = (exitCode: number | null, signal: NodeJS.Signals | null, spawnError?: Error) => {
      current = undefined;
      const parsed = exitCode === 0 ? parseSummary(benchmark, out) : undefined;
      const figures = evaluate(benchmark, parsed);
      const error = spawnError
        ? spawnError.message
        : exitCode !== 0
          ? `exited with ${signal ?? `code ${exitCode}`}`
          : !parsed
            ? 'no parsable summary on the last line'
            : figures.some((f) => f.value === null)
              ? `summary lacks ${figures.filter((f) => f.value === null).map((f) => f.figure).join(', ')}`
              : null;
      const lastLine = out.trimEnd().split('\n').at(-1)?.trim() || null;
      const outcome = { benchmark, command: `node ${args.join(' ')}`, exitCode, signal, durationS: Math.round((Date.now() - started) / 1000), lastLine, error };
      resolve({ outcome, figures });
    };
    child.once('error', (err) => finish(null, null, err));
    child.once('close', (code, signal) => finish(code, signal));
  });
}

function machine() {
  const cpus = os.cpus();
  return {
    cpu_model: cpus[0]?.model.trim() ?? 'unknown',
    cpu_count: cpus.length,
    memory_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    os_release: os.release(),
    // The machine may be shared: the load before the run says how quiet it was.
    loadavg_at_start: os.loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

async function main(): Promise<number> {
  // Ctrl-C already reaches the child through the terminal's process group; a
  // second SIGINT would kill it before it stops its own servers, so only
  // SIGTERM (sent to this process alone) is passed on.
  process.on('SIGINT', () => {
    interrupted = true;
  });
  process.on('SIGTERM', () => {
    interrupted = true;
    current?.kill('SIGTERM');
  });
  const date = new Date().toISOString();
  const host = machine();
  const outcomes: RunOutcome[] = [];
  const figures: FigureResult[] = [];
  for (const benchmark of BENCHMARKS) {
    if (interrupted) break;
    const { outcome, figures: f } = await runBenchmark(benchmark);
    outcomes.push(outcome);
    figures.push(...f);
    if (outcome.error) process.stdout.write(`${benchmark}: FAILED (${outcome.error})\n`);
  }

  process.stdout.write(`\n${formatTable(figures)}\n`);
  const failed = outcomes.filter((o) => o.error !== null);
  const targeted = figures.filter((f) => f.met !== null);
  process.stdout.write(
    `\ntargets met: ${targeted.filter((f) => f.met).length} of ${targeted.length}` +
      (failed.length > 0 ? `; failed: ${failed.map((o) => o.benchmark).join(', ')}` : '') +
      (interrupted ? '; interrupted' : '') +
      '\n',
  );

  const knobs = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('BENCH_') && k !== 'BENCH_DATABASE_URL'));
  const results = {
    date,
    machine: host,
    env: { ...knobs, ...(process.env.BENCH_DATABASE_URL && { BENCH_DATABASE_URL: '(set)' }) },
    benchmarks: outcomes.map((o) => ({
      benchmark: o.benchmark,
      command: o.command,
      exit_code: o.exitCode,
      signal: o.signal,
      duration_s: o.durationS,
      last_line: o.lastLine,
      failed: o.error !== null,
      error: o.error,
    })),
    figures,
  };
  const file = path.join(root, 'bench', 'results.json');
  await fs.writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
  return failed.length > 0 || interrupted || outcomes.length < BENCHMARKS.length ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await main();
}
