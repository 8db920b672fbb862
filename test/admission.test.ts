import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type BacklogCounter, countIsStale, createAdmission } from '../src/messaging/admission.ts';
import { DomainError } from '../src/shared/errors.ts';

/** A backlog the test sets (as the pipeline drains it); counts are recorded. */
function scriptedBacklog(initial: number) {
  const state = { backlog: initial, counts: 0, fail: false };
  const count: BacklogCounter = async (_org, limit) => {
    state.counts++;
    await new Promise((r) => setImmediate(r));
    if (state.fail) throw new Error('database down');
    return Math.min(state.backlog, limit);
  };
  return { state, count };
}

const settle = () => new Promise((r) => setTimeout(r, 5));

describe('API flow control (admission)', () => {
  it('a count is renewed every poll near the limit, every second well below it', () => {
    expect(countIsStale(10, 0, 500, 100, 20)).toBe(false);
    expect(countIsStale(10, 0, 1_000, 100, 20)).toBe(true);
    expect(countIsStale(50, 0, 19, 100, 20)).toBe(false);
    expect(countIsStale(50, 0, 20, 100, 20)).toBe(true);
  });

  it('below the limit requests go through after one count; at the limit they wait, and go in order as room comes', async () => {
    const { state, count } = scriptedBacklog(0);
    const gate = createAdmission(count, { limit: 3, maxWaitMs: 5_000, pollMs: 5 });
    // each admitted request stores its message: the backlog grows by one
    const store = (done: () => void) => {
      state.backlog++;
      done();
    };
    store(await gate.enter('org_a'));
    store(await gate.enter('org_a'));
    store(await gate.enter('org_a'));
    expect(state.counts).toBe(1);
    expect(state.backlog).toBe(3);
    const order: number[] = [];
    const waiting = [4, 5, 6].map((n) =>
      gate.enter('org_a').then((done) => {
        order.push(n);
        store(done);
      }),
    );
    await new Promise((r) => setTimeout(r, 40));
    expect(order).toEqual([]);
    expect(state.counts).toBeGreaterThan(2);
    // one message reached the carrier: one request goes
    state.backlog--;
    await new Promise((r) => setTimeout(r, 40));
    expect(order).toEqual([4]);
    state.backlog -= 3;
    await Promise.all(waiting);
    expect(order).toEqual([4, 5, 6]);
    gate.close();
  });

  it('after the longest wait a request is refused with a 429 that says when to come back', async () => {
    const { state, count } = scriptedBacklog(2);
    const gate = createAdmission(count, { limit: 2, maxWaitMs: 50, pollMs: 5 });
    const started = Date.now();
    const err = await gate.enter('org_a').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(err).toBeInstanceOf(DomainError);
    expect(err).toMatchObject({ code: 'rate_limited', extra: { reason: 'backlog_full', retry_after_seconds: 1, backlog_limit: 2 } });
    expect(state.counts).toBeGreaterThan(1);
    gate.close();
  });

  it('a count that never comes back does not hold a request past its wait: it is refused on time', async () => {
    // the first count answers (the backlog is full); every later one hangs, as a stuck database would
    let counts = 0;
    const gate = createAdmission(
      async () => {
        counts++;
        if (counts === 1) return 2;
        return new Promise<number>(() => {});
      },
      { limit: 2, maxWaitMs: 60, pollMs: 5, countTimeoutMs: 200 },
    );
    const started = Date.now();
    const outcome = await Promise.race([
      gate.enter('org_a').then(
        () => 'admitted',
        (e: unknown) => e,
      ),
      new Promise((r) => setTimeout(() => r('still waiting'), 1_000)),
    ]);
    expect(outcome).toMatchObject({ code: 'rate_limited', extra: { reason: 'backlog_full' } });
    expect(Date.now() - started).toBeLessThan(500);
    expect(counts).toBe(2);
    // the hung count is given up after countTimeoutMs: as a failed count, it lets requests through
    await new Promise((r) => setTimeout(r, 250));
    await expect(gate.enter('org_a')).resolves.toBeTypeOf('function');
    gate.close();
  });

  it("one organization's full backlog holds no other organization", async () => {
    const counts = new Map([['org_full', 5]]);
    const gate = createAdmission(async (org, limit) => Math.min(counts.get(org) ?? 0, limit), { limit: 5, maxWaitMs: 2_000, pollMs: 5 });
    let fullWent = false;
    const full = gate.enter('org_full').then(() => (fullWent = true));
    await gate.enter('org_other');
    expect(fullWent).toBe(false);
    counts.set('org_full', 0);
    await full;
    gate.close();
  });

  it('a count that fails lets requests through (the insert meets the trouble itself)', async () => {
    const { state, count } = scriptedBacklog(100);
    state.fail = true;
    const gate = createAdmission(count, { limit: 2, maxWaitMs: 1_000, pollMs: 5 });
    await gate.enter('org_a');
    gate.close();
  });

  it('limit 0: no flow control, nothing counted', async () => {
    const { state, count } = scriptedBacklog(1_000_000);
    const gate = createAdmission(count, { limit: 0, maxWaitMs: 10, pollMs: 5 });
    await Promise.all(Array.from({ length: 100 }, () => gate.enter('org_a')));
    expect(state.counts).toBe(0);
  });

  it('close refuses the waiting requests with a 503', async () => {
    const { count } = scriptedBacklog(1);
    const gate = createAdmission(count, { limit: 1, maxWaitMs: 10_000, pollMs: 5 });
    const waiting = gate.enter('org_a').then(
      () => 'admitted',
      (e: unknown) => (e as DomainError).code,
    );
    await settle();
    gate.close();
    expect(await waiting).toBe('service_unavailable');
  });

  it('property: what is stored or being stored never passes the limit while the pipeline only drains', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.record({ drainTo: fc.integer({ min: 0, max: 30 }), requests: fc.integer({ min: 0, max: 25 }) }), { minLength: 1, maxLength: 6 }),
        async (limit, rounds) => {
          let committed = 0;
          let storing = 0;
          let worst = 0;
          const gate = createAdmission(async (_org, l) => Math.min(committed, l), { limit, maxWaitMs: 30, pollMs: 2 });
          const enter = () =>
            gate.enter('org').then(
              async (done) => {
                storing++;
                worst = Math.max(worst, committed + storing);
                // the insert commits a moment later
                await new Promise((r) => setImmediate(r));
                storing--;
                committed++;
                done();
              },
              () => undefined,
            );
          for (const round of rounds) {
            committed = Math.min(committed, round.drainTo);
            await Promise.all(Array.from({ length: round.requests }, enter));
          }
          gate.close();
          return worst <= limit;
        },
      ),
      { numRuns: 40 },
    );
  });
});
