import type { CampaignRow } from './campaigns.store.ts';
import type { Progress } from './progress.ts';

/**
 * The live progress stream (Server-Sent Events): counting a campaign's
 * messages by status reads all of them, so a million-message campaign
 * costs PostgreSQL about a second per count. Two rules keep that bounded:
 * an update waits at least ten times as long as the last count took (one a
 * second for ordinary campaigns), and everyone watching one campaign in a
 * process shares one count per interval.
 */
export const MIN_INTERVAL_MS = 1_000;
export const MAX_INTERVAL_MS = 30_000;

/** How long to wait before the next update, after a count that took `computeMs` (pure). */
export function progressInterval(computeMs: number): number {
  return Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, Math.ceil(computeMs * 10)));
}

export interface ProgressFeed {
  /** The campaign's progress, fresh or shared with other viewers, and how long to wait before asking again. */
  next(c: CampaignRow): Promise<{ progress: Progress; waitMs: number }>;
}

interface Entry {
  result: Promise<{ progress: Progress; waitMs: number }>;
  /** Until when another viewer gets this result (set when the count has finished). */
  freshUntil: number;
}

export function createProgressFeed(compute: (c: CampaignRow) => Promise<Progress>, now: () => number = Date.now): ProgressFeed {
  const entries = new Map<string, Entry>();
  return {
    next(c) {
      const at = now();
      for (const [id, e] of entries) if (e.freshUntil < at - 60_000) entries.delete(id);
      // per campaign and status: a viewer that sees the campaign completed must not get a count
      // made while it ran (its stream would end on a stale `running`)
      const key = `${c.id}\u0000${c.status}`;
      const cached = entries.get(key);
      if (cached !== undefined && at < cached.freshUntil) return cached.result;
      const entry: Entry = {
        freshUntil: Number.POSITIVE_INFINITY, // shared while the count runs
        result: compute(c).then(
          (progress) => {
            const waitMs = progressInterval(now() - at);
            entry.freshUntil = now() + waitMs;
            return { progress, waitMs };
          },
          (err: unknown) => {
            entries.delete(key);
            throw err;
          },
        ),
      };
      entries.set(key, entry);
      return entry.result;
    },
  };
}
