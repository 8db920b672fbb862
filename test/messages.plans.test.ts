import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '../src/db/db.ts';
import { dispatchOrganization } from '../src/messaging/index.ts';
import { claim } from '../src/messaging/claim.ts';
import * as store from '../src/messaging/messages.store.ts';
import { interceptingPool, type SeenStatement } from './helpers/failingPool.ts';
import { grantCredits, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';
import { newSid } from './helpers/statusBatch.ts';

/**
 * The claim and the outcome step find a batch's messages by id. Their
 * statements also name a status, and each status set they name is the
 * predicate of a partial index (`messages_due` for queued,
 * `messages_in_flight` for sending). While the table's statistics still say
 * those statuses are rare, as they do just after a campaign has created
 * its messages, the planner would rather read the whole partial index and
 * filter it by id: every batch would then pay for the whole backlog. This
 * test makes exactly that situation and reads the plans of the statements
 * the steps really sent.
 */
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline({ withWorker: false, senderMps: 1000 });
  await grantCredits(p, 10_000);
});
afterAll(async () => {
  await p?.close();
});

async function filler(prefix: string, n: number, status: string, lease: boolean): Promise<void> {
  await sql`insert into messages (id, organization_id, workspace_id, dedupe_key, producer, purpose, to_number, country,
      from_number, body, encoding, segments, cost, status, send_at, claimed_at, lease_until)
    select 'msg_' || ${prefix} || lpad(i::text, 6, '0'), ${p.tenant.organizationId}, ${p.tenant.workspaceId}, ${prefix} || i, 'api',
      'transactional', '+14155550000', 'US', '+14155550100', 'x', 'GSM-7', 1, 1, ${status}, now() - interval '1 minute',
      ${lease ? sql`now()` : sql`null`}, ${lease ? sql`now() + interval '1 hour'` : sql`null`}
    from generate_series(1, ${n}) i`.execute(p.tdb.db);
}

/** Each scan of `relation` in an EXPLAIN (FORMAT JSON) plan, as "<node type> on <index>[+<index>…]" ("Seq Scan on -"). */
function scansOf(plan: unknown, relation: string): string[] {
  const found: string[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (n['Relation Name'] === relation && typeof n['Node Type'] === 'string' && n['Node Type'].includes('Scan')) {
      // a bitmap heap scan reads the indexes its bitmap index scans name
      const indexes = n['Node Type'] === 'Bitmap Heap Scan' ? [...JSON.stringify(n['Plans']).matchAll(/"Index Name":"(\w+)"/g)].map((m) => m[1]) : [n['Index Name']];
      found.push(`${n['Node Type']} on ${indexes.map((i) => (typeof i === 'string' ? i : '-')).join('+')}`);
    }
    Object.values(n).forEach(walk);
  };
  walk(plan);
  return found;
}

describe('the statements that find messages by id', () => {
  it('read them through the primary key, not a status index, with a backlog the statistics do not know of', async () => {
    await sql`alter table messages set (autovacuum_enabled = off)`.execute(p.tdb.db);
    await filler('done_', 2_000, 'delivered', false);
    await sql`analyze messages`.execute(p.tdb.db);
    await filler('queued_', 5_000, 'queued', false);
    await filler('sending_', 5_000, 'sending', true);

    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await sendViaApi(p, { to: `+1415555${String(7000 + i)}`, body: `plan test ${i}` });
      expect(r.statusCode).toBe(202);
      ids.push(r.json.id as string);
    }
    await dispatchOrganization(p.tdb.db, p.tenant.organizationId);

    const seen: SeenStatement[] = [];
    const db = createDb(interceptingPool(p.tdb.url, (s) => void seen.push(s)));
    try {
      const claimed = await claim({ ...p.sendDeps, db }, ids);
      expect(claimed).toHaveLength(20);
      const sent = await store.applyEvent(
        db,
        'accepted',
        claimed.map((c) => ({ id: c.message.id, patch: { provider_sid: newSid(), lease_until: null, expect_attempts: c.message.attempts } })),
      );
      expect(sent).toHaveLength(20);
    } finally {
      await db.destroy();
    }

    // the lock of the queued batch, the claim UPDATE, the outcome UPDATE
    const byId = seen.filter((s) => /^\s*(with|select|update)\b/i.test(s.text) && /\bmessages m\b/.test(s.text));
    expect(byId.length).toBeGreaterThanOrEqual(3);
    for (const s of byId) {
      // planned with the values, and generically, as the send path's transactions plan them (DB_GENERIC_PLANS)
      const { rows } = await p.tdb.pool.query<{ 'QUERY PLAN': unknown }>(`explain (format json) ${s.text}`, [...s.values]);
      const { rows: generic } = await p.tdb.pool.query<{ 'QUERY PLAN': unknown }>(`explain (generic_plan, format json) ${s.text}`);
      for (const plan of [rows[0]!['QUERY PLAN'], generic[0]!['QUERY PLAN']]) {
        const scans = scansOf(plan, 'messages');
        expect(scans.length, s.text).toBeGreaterThan(0);
        expect(scans.filter((scan) => / on messages_pkey$/.test(scan)).length, s.text).toBeGreaterThan(0);
        // and nothing else, but the carrier-id guard's probe of its unique index (applyEvent)
        for (const scan of scans) expect(scan, s.text).toMatch(/ on messages_pkey$|^Index (Only )?Scan on messages_provider_sid$/);
      }
    }
  });
});

describe("a sender's queue", () => {
  it('takes its next messages through its own index, in order, whatever else is queued', async () => {
    // the filler above: 5,000 queued messages of one sender, which the statistics do not know of;
    // other senders' queued messages beside them
    await sql`update messages set from_number = '+14155550199' where id like 'msg_queued_%' and id > 'msg_queued_002500'`.execute(p.tdb.db);
    const { nextInSenderQueue } = await import('../src/messaging/senderQueue.ts');
    const seen: SeenStatement[] = [];
    const db = createDb(interceptingPool(p.tdb.url, (s) => void seen.push(s)));
    try {
      const ids = await nextInSenderQueue(db, { workspaceId: p.tenant.workspaceId, fromNumber: '+14155550100' }, 2_000, 100);
      expect(ids).toEqual(Array.from({ length: 100 }, (_, i) => `msg_queued_${String(i + 1).padStart(6, '0')}`));
    } finally {
      await db.destroy();
    }
    const s = seen.find((x) => /\bfor update skip locked\b/.test(x.text))!;
    // with statistics that do not know the backlog, and with statistics that do (a computed
    // limit made the planner read every due message through messages_due and sort them)
    for (const analyzed of [false, true]) {
      if (analyzed) await sql`analyze messages`.execute(p.tdb.db);
      const { rows } = await p.tdb.pool.query<{ 'QUERY PLAN': unknown }>(`explain (format json) ${s.text}`, [...s.values]);
      expect(scansOf(rows[0]!['QUERY PLAN'], 'messages'), `analyzed: ${analyzed}`).toEqual(['Index Scan on messages_sender_queue']);
    }
    // and when the whole backlog is this sender's, known to the statistics
    await sql`update messages set from_number = '+14155550100' where id like 'msg_queued_%'`.execute(p.tdb.db);
    await sql`analyze messages`.execute(p.tdb.db);
    const { rows } = await p.tdb.pool.query<{ 'QUERY PLAN': unknown }>(`explain (format json) ${s.text}`, [...s.values]);
    expect(scansOf(rows[0]!['QUERY PLAN'], 'messages'), 'one sender\'s backlog').toEqual(['Index Scan on messages_sender_queue']);
  });
});
