import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import { DomainError } from '../shared/errors.ts';

/**
 * Flow control for POST /v1/messages. Without it the API accepts messages
 * as fast as clients post them, faster than the pipeline can send them
 * when it is saturated (the API's cheap insert against the pipeline's
 * dispatch, claim and carrier call), and the difference waits in a queue:
 * 64 clients posting as fast as they could left the last messages of
 * 20,000 waiting five seconds for the carrier, and one tenant's burst sat
 * in front of everything it posted after.
 *
 * So each organization's API backlog (its API messages due now and not yet
 * at the carrier: planned, queued or sending) has a limit. A request that
 * finds the backlog at its limit waits until there is room, in the order
 * requests came, and after `maxWaitMs` is refused with a 429 and
 * `Retry-After`: nothing is stored. Below the limit nothing waits. The
 * latency of what is accepted stays that of the pipeline, and a client
 * that posts faster than its messages go out is slowed to their pace.
 *
 * Counted: messages waiting for their sender's rate slot (a 1-a-second
 * long code is the usual reason a backlog grows) and retries waiting for
 * a carrier that is not taking them. Not counted: scheduled messages
 * (send_at ahead), messages deferred to quiet hours or an hourly cap,
 * blocked ones (credits), and other producers' messages (a campaign paces
 * itself and never holds the API back).
 *
 * Each API process counts the backlog (with a bounded statement) and adds
 * what it admits since; with several API processes the backlog can reach
 * their number times the limit. The count is renewed every `pollMs` while
 * requests wait or the backlog is past half the limit, else every second.
 * A count that fails, or has not come back after `countTimeoutMs`, lets
 * requests through: flow control is never the reason a message is refused
 * when the database would take it. A waiting request is refused at its
 * deadline whether or not a count is out.
 */
export interface AdmissionOptions {
  /** The backlog per organization above which requests wait; 0 turns flow control off. */
  limit: number;
  /** How long a request waits for room before its 429. */
  maxWaitMs: number;
  /** How often the backlog is counted again while requests wait. */
  pollMs?: number;
  /** A count that has not come back by then counts as failed (lets requests through). */
  countTimeoutMs?: number;
}

export interface Admission {
  /**
   * Resolves when this organization's request may be stored, with the
   * function to call once its insert has ended (stored or not); throws a
   * 429 DomainError after the wait.
   */
  enter(organizationId: string): Promise<() => void>;
  /** Refuses every waiting request and stops the timers (shutdown). */
  close(): void;
}

/** Counts an organization's backlog, up to `limit` (more is never needed). */
export type BacklogCounter = (organizationId: string, limit: number) => Promise<number>;

/** When the backlog was counted long enough ago to count again (pure). */
export function countIsStale(estimate: number, countedAt: number, now: number, limit: number, pollMs: number): boolean {
  return now - countedAt >= (estimate * 2 >= limit ? pollMs : RELAXED_MS);
}

const RELAXED_MS = 1_000;
const MAX_IDLE_STATES = 10_000;

interface Waiter {
  resolve: (done: () => void) => void;
  reject: (err: unknown) => void;
  /** Refuses the request at its deadline, whether or not a count is out (a slow or stuck database). */
  timer: NodeJS.Timeout;
}

interface OrgState {
  /** The last count plus what this process admitted since. */
  estimate: number;
  /** Admitted requests whose insert has not ended: a count may not see them yet. */
  storing: number;
  countedAt: number;
  counting: boolean;
  timer: NodeJS.Timeout | undefined;
  waiters: Waiter[];
}

export function backlogFull(maxWaitMs: number, limit: number): DomainError {
  return new DomainError(
    'rate_limited',
    `The organization's messages are not reaching the carrier as fast as they are posted: ${limit} wait to be sent, and no room came in ${Math.round(maxWaitMs / 1000)} s. Nothing was stored; post again after Retry-After.`,
    { extra: { reason: 'backlog_full', backlog_limit: limit, retry_after_seconds: 1 } },
  );
}

export function createAdmission(count: BacklogCounter, options: AdmissionOptions): Admission {
  const { limit, maxWaitMs } = options;
  const pollMs = options.pollMs ?? 20;
  const countTimeoutMs = options.countTimeoutMs ?? 2_000;
  const states = new Map<string, OrgState>();
  let closed = false;

  const admit = (s: OrgState): (() => void) => {
    s.estimate++;
    s.storing++;
    let ended = false;
    return () => {
      if (!ended) s.storing--;
      ended = true;
    };
  };

  const release = (s: OrgState): void => {
    while (s.waiters.length > 0 && s.estimate < limit) {
      const w = s.waiters.shift()!;
      clearTimeout(w.timer);
      w.resolve(admit(s));
    }
  };

  const recount = (organizationId: string, s: OrgState): void => {
    if (s.counting || s.timer !== undefined || closed) return;
    s.counting = true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('backlog count timed out')), countTimeoutMs);
      timer.unref();
    });
    Promise.race([count(organizationId, limit), timedOut]).then(
      (n) => {
        // inserts still running may have committed after the count's snapshot: counted as not seen
        s.estimate = n + s.storing;
        s.countedAt = Date.now();
      },
      () => {
        // fail open: the insert meets the database's trouble itself
        s.estimate = 0;
        s.countedAt = Date.now();
      },
    ).finally(() => {
      clearTimeout(timer);
      s.counting = false;
      release(s);
      if (s.waiters.length > 0 && !closed) {
        s.timer = setTimeout(() => {
          s.timer = undefined;
          recount(organizationId, s);
        }, pollMs);
        s.timer.unref();
      }
    });
  };

  const stateOf = (organizationId: string): OrgState => {
    let s = states.get(organizationId);
    if (s === undefined) {
      if (states.size >= MAX_IDLE_STATES) {
        for (const [id, other] of states) {
          if (other.waiters.length === 0 && other.storing === 0 && !other.counting && other.timer === undefined) states.delete(id);
        }
      }
      s = { estimate: 0, storing: 0, countedAt: Number.NEGATIVE_INFINITY, counting: false, timer: undefined, waiters: [] };
      states.set(organizationId, s);
    }
    return s;
  };

  return {
    enter(organizationId) {
      if (limit === 0) return Promise.resolve(() => undefined);
      if (closed) return Promise.reject(new DomainError('service_unavailable', 'The API is shutting down.'));
      const s = stateOf(organizationId);
      const now = Date.now();
      if (s.waiters.length === 0 && s.estimate < limit && !countIsStale(s.estimate, s.countedAt, now, limit, pollMs)) {
        return Promise.resolve(admit(s));
      }
      return new Promise<() => void>((resolve, reject) => {
        const waiter: Waiter = {
          resolve,
          reject,
          timer: setTimeout(() => {
            const at = s.waiters.indexOf(waiter);
            if (at === -1) return;
            s.waiters.splice(at, 1);
            reject(backlogFull(maxWaitMs, limit));
          }, maxWaitMs),
        };
        waiter.timer.unref();
        s.waiters.push(waiter);
        recount(organizationId, s);
      });
    },
    close() {
      closed = true;
      for (const s of states.values()) {
        if (s.timer !== undefined) clearTimeout(s.timer);
        s.timer = undefined;
        for (const w of s.waiters) {
          clearTimeout(w.timer);
          w.reject(new DomainError('service_unavailable', 'The API is shutting down.'));
        }
        s.waiters = [];
      }
    },
  };
}

/**
 * The organization's API backlog, counted up to `limit` through
 * `messages_api_backlog`: planned and due, queued (whatever its next
 * attempt: waiting for its sender's rate slot is the most common backlog of
 * all, and a retry waits for a carrier that is not taking it), or sending.
 */
export async function countApiBacklog(db: DbOrTx, organizationId: string, limit: number): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from (
      select 1 from messages
      where organization_id = ${organizationId} and producer = 'api' and status in ('planned', 'queued', 'sending')
        and (status <> 'planned' or coalesce(next_attempt_at, send_at) <= now())
      limit ${limit}) backlog`.execute(db);
  return rows[0]?.n ?? 0;
}
