import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dispatchOrganization } from '../src/messaging/index.ts';
import { grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * Credits go to an organization's messages in order (the paid-for prefix of
 * a campaign, G1/G6): a dispatch run never reserves later messages while an
 * earlier one is in another run's hands. With SKIP LOCKED a second run took
 * the next batch, got the account lock first and spent the credits on it;
 * the earlier batch then found none left and was blocked.
 */
let p: Pipeline;
beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000, withWorker: false });
});
afterAll(async () => {
  await p?.close();
});

it('a dispatch waits for the run holding the earlier messages instead of spending the credits past them', async () => {
  await grantCredits(p, 4);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const res = await sendViaApi(p, { to: `+1415555${String(3100 + i)}`, body: `order ${i}`, purpose: 'transactional' });
    expect(res.statusCode).toBe(202);
    ids.push(res.json.id as string);
  }
  ids.sort();
  // another dispatch run holds the first message (its batch), not yet reserved
  const other = new pg.Client({ connectionString: p.tdb.url });
  await other.connect();
  await other.query('begin');
  await other.query(`select id from messages where id = $1 for update`, [ids[0]]);
  const run = dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  await new Promise((r) => setTimeout(r, 500));
  await other.query('commit');
  await other.end();
  await run;
  await dispatchOrganization(p.tdb.db, p.tenant.organizationId);

  const statuses = await Promise.all(ids.map(async (id) => (await message(p, id)).status));
  expect(statuses).toEqual(['queued', 'queued', 'queued', 'queued', 'blocked']);
  const { rows } = await sql<{ reason: string }>`select status_reason as reason from messages where id = ${ids[4]!}`.execute(p.tdb.db);
  expect(rows[0]!.reason).toBe('insufficient_credits');
});
