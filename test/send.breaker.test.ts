import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Carrier } from '../src/carriers/index.ts';
import type { BreakerState } from '../src/messaging/breaker.ts';
import { dispatchOrganization, sendBatch } from '../src/messaging/index.ts';
import { grantCredits, message, type Pipeline, sendViaApi, startPipeline } from './helpers/pipeline.ts';

/**
 * The circuit breaker and the attempt limit, found by a review (2026-11-24):
 * a claim the open breaker sends back must not use up one of the message's
 * five tries, and a probe whose carrier call throws must not leave the
 * breaker half-open for good (nor lose its batch's other outcomes).
 */
let p: Pipeline;
let phone = 7000;
beforeAll(async () => {
  p = await startPipeline({ withWorker: false });
  await grantCredits(p, 10_000);
});
afterAll(async () => {
  await p?.close();
});

async function queuedMessage(): Promise<string> {
  const res = await sendViaApi(p, { to: `+1415555${String(phone++).padStart(4, '0')}`, body: `breaker ${phone}` });
  await dispatchOrganization(p.tdb.db, p.tenant.organizationId);
  return res.json.id as string;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('an open circuit breaker', () => {
  it('sends claims back without using up their attempts: after five rounds open, a transient answer is retried, not the end', async () => {
    const id = await queuedMessage();
    let calls = 0;
    const carrier: Carrier = { ...p.carrier, send: (req) => (calls++, p.carrier.send(req)) };
    // Open for 200 ms from whenever the send step looks, however long its claim took
    // (a fixed window set before the claim ran out under a busy CI run, and the
    // breaker let the message through as a probe).
    let open = true;
    const breakers = new (class extends Map<string, BreakerState> {
      override get(key: string): BreakerState | undefined {
        return open ? { state: 'open', until: Date.now() + 200 } : super.get(key);
      }
    })();
    const deps = { ...p.sendDeps, carrier, breakers };
    for (let round = 0; round < 5; round++) {
      await sendBatch(deps, [id]);
      expect(await message(p, id)).toMatchObject({ status: 'queued', status_reason: 'circuit_open', attempts: 0 });
      await sleep(300);
    }
    open = false;
    breakers.clear();
    p.simulator.setFaults({ errors: { '20429': 1 } });
    try {
      await sendBatch(deps, [id]);
    } finally {
      p.simulator.setFaults({});
    }
    expect(calls).toBe(1);
    // its first real try was refused for now: queued again with backoff, four tries left
    expect(await message(p, id)).toMatchObject({ status: 'queued', attempts: 1 });
  });

  it('a probe whose carrier call throws counts as a failure: the breaker probes again later, and the batch is recorded', async () => {
    const [first, second] = [await queuedMessage(), await queuedMessage()];
    let calls = 0;
    let throwNext = true;
    const carrier: Carrier = {
      ...p.carrier,
      send: async (req) => {
        calls++;
        if (throwNext) {
          throwNext = false;
          throw new TypeError('an answer the adapter does not know');
        }
        return p.carrier.send(req);
      },
    };
    const breakers = new Map<string, BreakerState>([[p.carrier.accountId, { state: 'open', until: Date.now() - 1 }]]);
    const deps = { ...p.sendDeps, carrier, breakers };
    await sendBatch(deps, [first, second]); // does not throw: each message has its outcome
    expect(await message(p, first)).toMatchObject({ status: 'unknown', status_reason: 'no_answer' }); // the request may have left
    expect((await message(p, second)).status).toMatch(/^(queued)$/); // the breaker stayed shut for the rest of the batch
    expect(breakers.get(p.carrier.accountId)).toMatchObject({ state: 'open' }); // reopened, not half-open for good
    // once it lets a probe through again (and the message's retry time has come), sends go out
    breakers.set(p.carrier.accountId, { state: 'open', until: Date.now() - 1 });
    await sql`update messages set next_attempt_at = now() where id = ${second}`.execute(p.tdb.db);
    await sendBatch(deps, [second]);
    expect(calls).toBe(2);
    expect((await message(p, second)).status).toMatch(/^(sent|delivered)$/);
  });
});
