import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BEGIN_GENERIC } from '../src/db/prepared.ts';
import { campaignAction, createCampaign, makeAudience, waitForCampaign } from './helpers/campaigns.ts';
import { createTestDatabase } from './helpers/db.ts';
import { eventually, grantCredits, nudge, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * The send path's transactions plan their statements generically
 * (`DB_GENERIC_PLANS`, src/db/prepared.ts): one plan per statement and
 * connection, made without the values. Such a plan cannot use a partial
 * index that only a value would prove (`status = $1` cannot prove
 * `where status = 'queued'`), and would then read a whole table or a whole
 * index where the plan made with the values read a few rows.
 *
 * This test runs the send path through its branches (credits missing, then
 * granted; carrier errors, transient and permanent; dropped answers;
 * duplicated and reordered callbacks; a campaign that pauses for credits
 * and resumes), records every statement those transactions sent, and plans
 * each twice, with its recorded values and generically, sequential scans
 * disabled so that the planner shows whether an index can serve it at all.
 * A relation the generic plan reads in full, where the plan with values did
 * not, fails it.
 */
interface Recorded {
  text: string;
  values: readonly unknown[];
}

const recorded = new Map<string, Recorded>();
const inGeneric = new WeakMap<object, boolean>();
const originalQuery = pg.Client.prototype.query;

function record(client: object, text: string, values: readonly unknown[]): void {
  if (text === BEGIN_GENERIC) inGeneric.set(client, true);
  else if (/^\s*(commit|rollback)\b/i.test(text)) inGeneric.set(client, false);
  else if (inGeneric.get(client) === true && /^\s*(with|select|insert|update|delete)\b/i.test(text) && !recorded.has(text)) {
    recorded.set(text, { text, values });
  }
}

let p: Pipeline;

beforeAll(async () => {
  // every client of this test process: the API's, the worker's, the capture drain's
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const first = args[0] as string | { text?: unknown; values?: unknown } | null;
    const text = typeof first === 'string' ? first : first?.text;
    const values = Array.isArray(args[1]) ? args[1] : typeof first === 'object' && Array.isArray(first?.values) ? first.values : [];
    if (typeof text === 'string') record(this, text, values as unknown[]);
    return (originalQuery as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof pg.Client.prototype.query;
  p = await startPipeline({
    faults: {
      latencyMs: { min: 0, max: 2 },
      errors: { '30003': 0.08, '21610': 0.04, '21211': 0.04 },
      dropAfterAccept: 0.04,
      finalStatus: { undelivered: 0.1 },
      duplicateCallbacks: 0.2,
      reorderCallbacks: 0.2,
    },
    seed: 7,
  });
}, 60_000);

afterAll(async () => {
  pg.Client.prototype.query = originalQuery;
  await p?.close();
});

type PlanNode = Record<string, unknown>;

/** The relations and indexes a plan reads in full: "messages (seq)", "messages_pkey (whole index)". */
function fullReads(plan: unknown): Set<string> {
  const found = new Set<string>();
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const n = node as PlanNode;
    const type = n['Node Type'];
    if (type === 'Seq Scan') found.add(`${String(n['Relation Name'])} (seq)`);
    if ((type === 'Index Scan' || type === 'Index Only Scan' || type === 'Bitmap Index Scan') && n['Index Cond'] === undefined) {
      found.add(`${String(n['Index Name'])} (whole index)`);
    }
    Object.values(n).forEach(walk);
  };
  walk(plan);
  return found;
}

async function genericFullReads(client: pg.Client, text: string): Promise<Set<string>> {
  const generic = await client.query<{ 'QUERY PLAN': unknown }>(`explain (generic_plan, format json) ${text}`);
  return fullReads(generic.rows[0]!['QUERY PLAN']);
}

const withValuesOf = new Map<string, Set<string>>();

const terminal = ['sent', 'delivered', 'undelivered', 'failed', 'skipped'];

describe('the generic plans of the send path', () => {
  it('read no table or index in full where the plans with values do not', async () => {
    // credits missing: the first messages are blocked, then a grant moves them on
    const ids: string[] = [];
    const send = async (n: number, from: number) => {
      for (let i = 0; i < n; i++) {
        const r = await sendViaApi(p, { to: `+1415555${String(from + i).padStart(4, '0')}`, body: `generic plan ${i}` });
        expect(r.statusCode).toBe(202);
        ids.push(r.json.id as string);
      }
    };
    await send(10, 1000);
    await eventually(async () => {
      const { rows } = await p.tdb.pool.query<{ n: number }>(`select count(*)::int as n from messages where id = any($1) and status = 'blocked'`, [ids]);
      return rows[0]!.n === 10 ? true : undefined;
    }, 15_000, 'the first messages to be blocked');
    await grantCredits(p, 45);
    await send(30, 1100);

    // a campaign the remaining credits do not cover: it pauses, a grant resumes it
    const audience = await makeAudience(p, 30, { firstPhone: 3000 });
    const campaign = await createCampaign(p, audience.listId);
    expect((await campaignAction(p, campaign.id, 'start')).statusCode).toBe(200);
    await waitForCampaign(p, campaign.id, (c) => c.status === 'paused' && c.pause_reason === 'insufficient_credits');
    await grantCredits(p, 200);

    await eventually(
      async () => {
        await nudge(p);
        const { rows } = await p.tdb.pool.query<{ n: number }>(`select count(*)::int as n from messages where not (status = any($1))`, [terminal]);
        return rows[0]!.n === 0 ? true : undefined;
      },
      60_000,
      'every message to end',
    );
    await waitForCampaign(p, campaign.id, (c) => c.status === 'completed');
    await p.stopWorker();

    const statements = [...recorded.values()];
    const texts = statements.map((s) => s.text).join('\n');
    // the steps were all there: dispatch, claim, outcome, callbacks, captures
    expect(statements.length).toBeGreaterThan(20);
    for (const step of [/from messages m join workspaces w/, /update messages/, /credit_reservations/, /capture_queue/, /graphile_worker\.add_jobs/]) {
      expect(texts).toMatch(step);
    }

    const client = new pg.Client({ connectionString: p.tdb.url });
    await client.connect();
    const failures: { statement: string; generic: string[]; withValues: string[] }[] = [];
    try {
      // Planned against a table of some size, with fresh statistics, as in
      // production: with a few dozen rows a generic plan (which assumes 100
      // ids in an array) may rightly read the small primary key in full, and
      // whether it does depended on when autovacuum last analyzed the table.
      // The copies are terminal, so every status-partial index stays as it was.
      await client.query(`insert into messages
        select (jsonb_populate_record(null::messages, to_jsonb(m) || jsonb_build_object(
          'id', m.id || 'f' || g, 'dedupe_key', m.dedupe_key || ':filler:' || g, 'provider_sid', null))).*
        from messages m, generate_series(1, 300) g`);
      await client.query('analyze messages');
      await client.query('set enable_seqscan = off');
      for (const s of statements) {
        await client.query('set plan_cache_mode = force_custom_plan');
        const custom = await client.query<{ 'QUERY PLAN': unknown }>(`explain (format json) ${s.text}`, [...s.values]);
        const withValues = fullReads(custom.rows[0]!['QUERY PLAN']);
        withValuesOf.set(s.text, withValues);
        const extra = [...(await genericFullReads(client, s.text))].filter((r) => !withValues.has(r));
        if (extra.length > 0) failures.push({ statement: s.text, generic: extra, withValues: [...withValues] });
      }
    } finally {
      await client.end();
    }
    expect(failures).toEqual([]);

    // A connection makes its generic plan once, with the table sizes of that
    // moment, and keeps it until an ANALYZE: the same statements planned
    // against a young database (tables just created, never analyzed, as in
    // the first seconds of a fresh install or a benchmark) must not read a
    // table or index in full either. Before sequential scans were turned off
    // in these transactions, a status-callback batch planned this way read
    // all of `messages` for every batch, and the outcome step's look at the
    // reservations read every open one through their partial index.
    const young = await createTestDatabase({ poolSize: 1 });
    const youngClient = new pg.Client({ connectionString: young.url });
    await youngClient.connect();
    const youngFailures: typeof failures = [];
    try {
      // planned as the send path's transactions plan (their settings come with BEGIN_GENERIC)
      await youngClient.query(BEGIN_GENERIC);
      for (const s of statements) {
        const withValues = withValuesOf.get(s.text) ?? new Set<string>();
        const extra = [...(await genericFullReads(youngClient, s.text))].filter((r) => !withValues.has(r));
        if (extra.length > 0) youngFailures.push({ statement: s.text, generic: extra, withValues: [...withValues] });
      }
    } finally {
      await youngClient.query('rollback').catch(() => {});
      await youngClient.end();
      await young.close();
    }
    expect(youngFailures).toEqual([]);
  }, 120_000);
});
