import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countApiBacklog } from '../src/messaging/index.ts';
import { bearer, createTenant } from './helpers/app.ts';
import { eventually, grantCredits, nudge, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * The API's flow control, through the real API, database and pipeline: an
 * organization's API backlog (messages due and not yet at the carrier) has
 * a limit; past it requests wait, and after the longest wait they are
 * refused with a 429 and Retry-After, storing nothing.
 */
const LIMIT = 3;
const WAIT_MS = 600;
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline({ withWorker: false, senderMps: 1000, intake: { backlogLimit: LIMIT, backlogWaitMs: WAIT_MS } });
  await grantCredits(p, 10_000);
  await sql`update workspaces set hourly_cap = null where id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
});
afterAll(async () => {
  await p?.close();
});

const stored = async () => {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where organization_id = ${p.tenant.organizationId}`.execute(p.tdb.db);
  return rows[0]!.n;
};
const to = (i: number) => `+1415555${String(2000 + i).padStart(4, '0')}`;

describe('POST /v1/messages flow control', () => {
  it('past the limit a request waits, then gets a 429 with Retry-After and nothing is stored; scheduled sends, replays and other organizations are not held', async () => {
    // no worker: nothing leaves the backlog
    for (let i = 0; i < LIMIT; i++) expect((await sendViaApi(p, { to: to(i), body: `fill ${i}` }, `fill-${i}`)).statusCode).toBe(202);
    expect(await countApiBacklog(p.tdb.db, p.tenant.organizationId, 100)).toBe(LIMIT);

    const started = Date.now();
    const refused = await p.app.inject({
      method: 'POST',
      url: '/v1/messages',
      headers: bearer(p.tenant.workspaceKey),
      payload: { to: to(9), body: 'one too many', purpose: 'transactional' },
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(WAIT_MS - 50);
    expect(refused.statusCode).toBe(429);
    expect(refused.headers['content-type']).toContain('application/problem+json');
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.json()).toMatchObject({ status: 429, reason: 'backlog_full', backlog_limit: LIMIT });
    expect(await stored()).toBe(LIMIT);

    // a retry of a stored request gets its message at once, full or not
    const replayStarted = Date.now();
    const replay = await sendViaApi(p, { to: to(0), body: 'fill 0' }, 'fill-0');
    expect(replay.statusCode).toBe(200);
    expect(Date.now() - replayStarted).toBeLessThan(WAIT_MS / 2);
    // a send scheduled ahead is not in the backlog, and is not held
    const later = await p.app.inject({
      method: 'POST',
      url: '/v1/messages',
      headers: bearer(p.tenant.workspaceKey),
      payload: { to: to(10), body: 'tomorrow', purpose: 'transactional', send_at: new Date(Date.now() + 86_400_000).toISOString() },
    });
    expect(later.statusCode).toBe(202);
    // another organization has its own backlog
    const other = await createTenant(p.app, p.op, 'Other Co');
    await p.app.inject({ method: 'POST', url: '/v1/sender-numbers', headers: bearer(other.workspaceKey), payload: { phone_number: '+14155550199' } });
    const otherStarted = Date.now();
    const theirs = await p.app.inject({
      method: 'POST',
      url: '/v1/messages',
      headers: bearer(other.workspaceKey),
      payload: { to: to(11), body: 'not held', purpose: 'transactional' },
    });
    expect(theirs.statusCode).toBe(202);
    expect(Date.now() - otherStarted).toBeLessThan(WAIT_MS);
    expect(await stored()).toBe(LIMIT + 1);
  });

  it('with the pipeline running, clients that post faster than it sends are slowed to its pace: the backlog never passes the limit and every message goes once', async () => {
    await p.startWorker();
    // the wake-ups of the messages stored with no dispatcher listening were lost: what the minute's sweep does
    await nudge(p);
    await eventually(async () => ((await countApiBacklog(p.tdb.db, p.tenant.organizationId, 100)) === 0 ? true : undefined), 20_000, 'the first messages sent');
    let worst = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        worst = Math.max(worst, await countApiBacklog(p.tdb.db, p.tenant.organizationId, 1_000));
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const COUNT = 60;
    let next = 0;
    await Promise.all(
      Array.from({ length: 12 }, async () => {
        while (next < COUNT) {
          const i = next++;
          for (;;) {
            const res = await sendViaApi(p, { to: to(100 + i), body: `paced ${i}` }, `paced-${i}`);
            if (res.statusCode === 202) break;
            // a well-behaved client: after a 429, again after Retry-After
            expect(res.statusCode).toBe(429);
            await new Promise((r) => setTimeout(r, 200));
          }
        }
      }),
    );
    await eventually(
      async () => {
        const bodies = p.simulator.log().filter((m) => m.body.startsWith('paced ')).map((m) => m.body);
        return bodies.length >= COUNT ? bodies : undefined;
      },
      30_000,
      'every paced message at the carrier',
    );
    sampling = false;
    await sampler;
    const bodies = p.simulator.log().filter((m) => m.body.startsWith('paced ')).map((m) => m.body);
    expect(bodies.length).toBe(COUNT);
    expect(new Set(bodies).size).toBe(COUNT);
    expect(worst).toBeGreaterThan(0);
    expect(worst).toBeLessThanOrEqual(LIMIT);
    // the refusals a client may have seen left nothing behind: one row per message
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where body like 'paced %'`.execute(p.tdb.db);
    expect(rows[0]!.n).toBe(COUNT);
  });

  it("messages waiting for their sender's rate slot count: a client posting faster than its sender sends is slowed to its pace", async () => {
    await sql`update sender_numbers set mps = 1 where workspace_id = ${p.tenant.workspaceId}`.execute(p.tdb.db);
    /** what really waits: every API message planned and due, queued (whatever its next attempt) or sending */
    const waiting = async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages
        where organization_id = ${p.tenant.organizationId} and producer = 'api'
          and (status in ('queued', 'sending') or (status = 'planned' and send_at <= now()))`.execute(p.tdb.db);
      return rows[0]!.n;
    };
    let worst = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        worst = Math.max(worst, await waiting());
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    // one a second: the claim's 2 s slot horizon holds two, the next wait queued for their slot
    const COUNT = 8;
    let next = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (next < COUNT) {
          const i = next++;
          for (;;) {
            const res = await sendViaApi(p, { to: to(300 + i), body: `slow ${i}` }, `slow-${i}`);
            if (res.statusCode === 202) break;
            expect(res.statusCode).toBe(429);
            await new Promise((r) => setTimeout(r, 200));
          }
        }
      }),
    );
    await eventually(async () => (p.simulator.log().filter((m) => m.body.startsWith('slow ')).length >= COUNT ? true : undefined), 30_000, 'every slow message sent');
    sampling = false;
    await sampler;
    expect(new Set(p.simulator.log().filter((m) => m.body.startsWith('slow ')).map((m) => m.body)).size).toBe(COUNT);
    expect(worst).toBeGreaterThan(0);
    expect(worst).toBeLessThanOrEqual(LIMIT);
  }, 60_000);
});
