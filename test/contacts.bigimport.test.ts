import http from 'node:http';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { bearer } from './helpers/app.ts';
import { eventually, type Pipeline, startPipeline } from './helpers/pipeline.ts';

/**
 * A large import never held in memory: the file is generated as a stream,
 * sent over a real socket, stored in chunks, and parsed by the real worker.
 * 200,000 rows by default; CREDENCE_BIG_IMPORT=1 makes it 1,000,000 (about
 * 90 s on two cores).
 *
 * Two measures. The live heap (after a forced full GC) at each quarter of
 * the job must stay near where it started: rows or file bytes kept would
 * pile up there. And the peak RSS: V8 lets the old generation grow to about
 * three times the live heap (~70 MB in this test process) before a full GC,
 * so ~200 MB of collectable garbage is normal at the peak, the same for
 * 200,000 rows as for 1,000,000.
 */
const ROWS = process.env.CREDENCE_BIG_IMPORT === '1' ? 1_000_000 : 200_000;
const MAX_LIVE_HEAP_GROWTH = 48 * 1024 * 1024;
const MAX_RSS_GROWTH = 256 * 1024 * 1024;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const AREAS = [212, 213, 312, 415, 617, 646, 718, 917];
const EXCHANGES = [202, 203, 204, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216];
const phoneOf = (i: number) => {
  const j = Math.floor(i / AREAS.length);
  return `+1${AREAS[i % AREAS.length]}${EXCHANGES[Math.floor(j / 10_000)]}${String(j % 10_000).padStart(4, '0')}`;
};
/** Every 1,000th row has a bad phone. */
const isBad = (i: number) => i % 1000 === 999;

function* csv(rows: number): Generator<Buffer> {
  yield Buffer.from('phone,first_name,last_name,timezone,consent_marketing,tier,notes\n');
  const lines: string[] = [];
  for (let i = 0; i < rows; i++) {
    const notes = i % 100 === 0 ? `"note ${i}, with a comma\nand a second line"` : '';
    lines.push(`${isBad(i) ? 'not-a-number' : phoneOf(i)},First${i},Last${i},${i % 2 ? 'America/New_York' : ''},${i % 3 ? 'yes' : ''},t${i % 5},${notes}`);
    if (lines.length === 2000) {
      yield Buffer.from(`${lines.join('\n')}\n`);
      lines.length = 0;
    }
  }
  if (lines.length > 0) yield Buffer.from(`${lines.join('\n')}\n`);
}

function expectedConsents(rows: number): number {
  let n = 0;
  for (let i = 0; i < rows; i++) if (!isBad(i) && i % 3 !== 0) n++;
  return n;
}

let p: Pipeline;
beforeAll(async () => {
  p = await startPipeline();
});
afterAll(async () => {
  await p?.close();
});

function post(url: string, key: string, body: Readable): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { ...bearer(key), 'content-type': 'text/csv' } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(parts).toString()) as Record<string, unknown> }));
      res.on('error', reject);
    });
    req.on('error', reject);
    pipeline(body, req).catch(reject);
  });
}

it(`imports ${ROWS.toLocaleString('en')} streamed rows with bounded memory`, { timeout: ROWS > 200_000 ? 900_000 : 300_000 }, async () => {
  const { tenant } = p;
  gc();
  const baseline = process.memoryUsage().rss;
  const baselineHeap = process.memoryUsage().heapUsed;
  const liveHeap: number[] = [];
  let peak = baseline;
  let ticks = 0;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peak = Math.max(peak, m.rss);
    if (process.env.DEBUG_MEM && ++ticks % 20 === 0) process.stdout.write(`mem rss ${mb(m.rss)} heap ${mb(m.heapUsed)}/${mb(m.heapTotal)} ext ${mb(m.external)} ab ${mb(m.arrayBuffers)}\n`);
  }, 50);
  try {
    const t0 = Date.now();
    const res = await post(`${p.apiUrl}/v1/contacts/imports`, tenant.workspaceKey, Readable.from(csv(ROWS)));
    const uploadMs = Date.now() - t0;
    expect(res.status, JSON.stringify(res.json)).toBe(202);
    expect(res.json).toMatchObject({ status: 'queued', rows_total: ROWS });
    const id = res.json.id as string;

    const t1 = Date.now();
    const done = await eventually(
      async () => {
        const r = await p.app.inject({ method: 'GET', url: `/v1/contacts/imports/${id}`, headers: bearer(tenant.workspaceKey) });
        const body = r.json() as Record<string, unknown>;
        if ((body.rows_done as number) >= ((liveHeap.length + 1) * ROWS) / 4) {
          gc();
          liveHeap.push(process.memoryUsage().heapUsed - baselineHeap);
        }
        return body.status === 'completed' || body.status === 'failed' ? body : undefined;
      },
      ROWS > 200_000 ? 850_000 : 280_000,
      'the import to finish',
    );
    const jobMs = Date.now() - t1;
    const bad = Math.floor(ROWS / 1000);
    expect(done).toMatchObject({
      status: 'completed',
      rows_total: ROWS,
      rows_done: ROWS,
      rows_imported: ROWS - bad,
      rows_merged: 0,
      rows_invalid: bad,
      consents_recorded: expectedConsents(ROWS),
    });
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from contacts where workspace_id = ${tenant.workspaceId}`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(ROWS - bad);
    const growth = peak - baseline;
    process.stdout.write(
      `big import: ${ROWS} rows, upload ${uploadMs} ms, job ${jobMs} ms, RSS baseline ${mb(baseline)} MB, peak ${mb(peak)} MB, ` +
        `growth ${mb(growth)} MB; live heap growth at each quarter: ${liveHeap.map(mb).join(', ')} MB\n`,
    );
    expect(liveHeap.length).toBeGreaterThanOrEqual(3);
    for (const live of liveHeap) expect(live).toBeLessThan(MAX_LIVE_HEAP_GROWTH);
    expect(growth).toBeLessThan(MAX_RSS_GROWTH);
  } finally {
    clearInterval(sampler);
  }
});

const mb = (bytes: number) => Math.round(bytes / 1024 / 1024);
