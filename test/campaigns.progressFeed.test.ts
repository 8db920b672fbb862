import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CampaignRow } from '../src/campaigns/campaigns.store.ts';
import { createProgressFeed, MAX_INTERVAL_MS, MIN_INTERVAL_MS, progressInterval } from '../src/campaigns/progressFeed.ts';
import type { Progress } from '../src/campaigns/progress.ts';

/**
 * The live progress stream's pacing: an update waits ten times as long as
 * the last count took (1 s to 30 s), and viewers of one campaign share one
 * count per interval.
 */
const campaign = (id: string) => ({ id }) as CampaignRow;
const progressOf = (id: string, n: number) => ({ campaign_id: id, done: n }) as unknown as Progress;

describe('progressInterval', () => {
  it('is ten times the count, never under 1 s nor over 30 s', () => {
    expect(progressInterval(5)).toBe(MIN_INTERVAL_MS);
    expect(progressInterval(250)).toBe(2_500);
    expect(progressInterval(60_000)).toBe(MAX_INTERVAL_MS);
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1e7, noNaN: true }), (ms) => {
        const wait = progressInterval(ms);
        expect(wait).toBeGreaterThanOrEqual(MIN_INTERVAL_MS);
        expect(wait).toBeLessThanOrEqual(MAX_INTERVAL_MS);
        expect(wait >= Math.min(MAX_INTERVAL_MS, ms * 10)).toBe(true);
      }),
    );
  });
});

describe('the shared feed', () => {
  it('viewers of one campaign share a count while it is fresh; another campaign, or a stale one, is counted anew', async () => {
    let clock = 0;
    const counts: string[] = [];
    const feed = createProgressFeed(async (c) => {
      counts.push(c.id);
      clock += 400; // the count takes 400 ms
      return progressOf(c.id, counts.length);
    }, () => clock);

    const [a, b] = await Promise.all([feed.next(campaign('cmp_a')), feed.next(campaign('cmp_a'))]);
    expect(a).toBe(b);
    expect(a.waitMs).toBe(4_000);
    clock += 3_000;
    expect(await feed.next(campaign('cmp_a'))).toBe(a); // still fresh: shared
    await feed.next(campaign('cmp_b'));
    expect(counts).toEqual(['cmp_a', 'cmp_b']);
    clock += 4_000;
    const later = await feed.next(campaign('cmp_a')); // stale: counted again
    expect(later.progress).toMatchObject({ done: 3 });
    expect(counts).toEqual(['cmp_a', 'cmp_b', 'cmp_a']);
  });

  it('a count that fails is not shared afterwards: the next viewer counts again', async () => {
    let fail = true;
    const feed = createProgressFeed(async (c) => {
      if (fail) throw new Error('database away');
      return progressOf(c.id, 1);
    });
    await expect(feed.next(campaign('cmp_x'))).rejects.toThrow('database away');
    fail = false;
    expect((await feed.next(campaign('cmp_x'))).progress).toMatchObject({ done: 1 });
  });
});
