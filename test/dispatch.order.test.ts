import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dispatchOrganization, lockOrganizationDispatch } from '../src/messaging/index.ts';
import { grantCredits, message, optOutTwoInTurn, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * Credits go to an organization's messages in order (the paid-for prefix of
 * a campaign, G1/G6): its dispatch runs take turns, so a run never reserves
 * later messages while another holds the earlier ones. Without turns a second
 * run skipped to the next batch, got the account lock first and spent the
 * credits on it; the earlier batch then found none left and was blocked.
 */
let p: Pipeline;
beforeAll(async () => {
  p = await startPipeline({ senderMps: 1000, withWorker: false });
});
afterAll(async () => {
  await p?.close();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('a dispatch run waits for the run holding the earlier messages instead of spending the credits past them', async () => {
  await grantCredits(p, 4);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const res = await sendViaApi(p, { to: `+1415555${String(3100 + i)}`, body: `order ${i}`, purpose: 'transactional' });
    expect(res.statusCode).toBe(202);
    ids.push(res.json.id as string);
  }
  ids.sort();
  // another run has its turn and holds its batch (the first message), not yet reserved
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let holding!: () => void;
  const held = new Promise<void>((r) => (holding = r));
  const other = p.tdb.db.transaction().execute(async (trx) => {
    await lockOrganizationDispatch(trx, p.tenant.organizationId);
    await sql`select id from messages where id = ${ids[0]!} for update`.execute(trx);
    holding();
    await released;
  });
  await held;
  const run = dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  await sleep(500);
  release();
  await other;
  await run;

  const statuses = await Promise.all(ids.map(async (id) => (await message(p, id)).status));
  expect(statuses).toEqual(['queued', 'queued', 'queued', 'queued', 'blocked']);
  expect((await message(p, ids[4]!)).status_reason).toBe('insufficient_credits');
});

it('an outcome step opting out two numbers in turn and a concurrent dispatch do not deadlock', async () => {
  await grantCredits(p, 100);
  const phoneB = '+14155553201';
  const phoneA = '+14155553202';
  const b = await sendViaApi(p, { to: phoneB, body: 'to B', purpose: 'transactional' }); // lower id
  const a = await sendViaApi(p, { to: phoneA, body: 'to A', purpose: 'transactional' }); // higher id
  expect((b.json.id as string) < (a.json.id as string)).toBe(true);
  // as send.ts records 21610 answers, A (the higher id) first
  expect(await optOutTwoInTurn(p, phoneA, phoneB, () => dispatchOrganization(p.tdb.db, p.tenant.organizationId))).toEqual(['ok', 'ok']);
}, 30_000);
