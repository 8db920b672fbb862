/**
 * The simulator's memory: every accepted message in acceptance order (the
 * ground-truth log), the messages by sid, list queries over them, and
 * counters of what happened.
 */
import { messageResource, messagesUri, type SimMessage } from './resources.ts';

export interface SimStats {
  /** Create calls that reached the handler (authenticated or not). */
  createRequests: number;
  accepted: number;
  /** Of the accepted: what became of the HTTP answer. */
  answered: number;
  dropped: number;
  hung: number;
  /** Error answers to create calls by Twilio code (validation, auth, injected, outage). */
  rejected: Record<string, number>;
  /** The subset of `rejected` that the fault profile injected. */
  injected: Record<string, number>;
  /** Creates answered 503 because of an outage window. */
  outageRejected: number;
  /** Final statuses reached so far. */
  finalStatus: { delivered: number; undelivered: number; failed: number };
  callbacks: { posted: number; attempts: number; failedAttempts: number; gaveUp: number; duplicated: number; reordered: number; lost: number };
  inbound: { posted: number; failed: number };
}

export function emptyStats(): SimStats {
  return {
    createRequests: 0,
    accepted: 0,
    answered: 0,
    dropped: 0,
    hung: 0,
    rejected: {},
    injected: {},
    outageRejected: 0,
    finalStatus: { delivered: 0, undelivered: 0, failed: 0 },
    callbacks: { posted: 0, attempts: 0, failedAttempts: 0, gaveUp: 0, duplicated: 0, reordered: 0, lost: 0 },
    inbound: { posted: 0, failed: 0 },
  };
}

export const bump = (table: Record<string, number>, key: number | string) => {
  table[key] = (table[key] ?? 0) + 1;
};

export interface MessageLog {
  add(message: SimMessage): void;
  get(accountSid: string, sid: string): SimMessage | undefined;
  /** Copies, in acceptance order. */
  all(): SimMessage[];
  clear(): void;
  /** Newest first, filtered, one page in Twilio's page shape; or a reason to answer 400. */
  page(accountSid: string, query: URLSearchParams): { page: Record<string, unknown> } | { invalid: string };
}

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;

function parseDate(value: string): number | undefined {
  const ms = DATE_ONLY.test(value) ? Date.parse(`${value}T00:00:00Z`) : Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

type Filter = (m: SimMessage, sentMs: number) => boolean;

/**
 * The SDK sends `dateSentAfter` as the field `DateSent>` (on the wire
 * `DateSent%3E=…`, which reads as `DateSent>=…`) and `dateSentBefore` as
 * `DateSent<`: both inclusive, compared to the second, since Twilio's dates
 * have no milliseconds.
 */
function filtersOf(query: URLSearchParams): Filter[] | string {
  const filters: Filter[] = [];
  const to = query.get('To');
  const from = query.get('From');
  if (to !== null) filters.push((m) => m.to === to);
  if (from !== null) filters.push((m) => m.from === from);
  for (const [name, test] of [
    ['DateSent', (sent: number, at: number, dateOnly: boolean) => (dateOnly ? sent >= at && sent < at + 86_400_000 : sent === at)],
    ['DateSent>', (sent: number, at: number) => sent >= at],
    ['DateSent<', (sent: number, at: number) => sent <= at],
  ] as const) {
    const raw = query.get(name);
    if (raw === null) continue;
    const at = parseDate(raw);
    if (at === undefined) return `Invalid value for ${name}: ${raw}`;
    const dateOnly = DATE_ONLY.test(raw);
    filters.push((_m, sent) => test(sent, at, dateOnly));
  }
  return filters;
}

/** A logged message with its place in acceptance order and its whole-second send time. */
interface Entry {
  message: SimMessage;
  seq: number;
  sentMs: number;
}

/** Index of the first entry whose seq is `before` or later (entries are in seq order). */
function firstAtOrAfter(entries: readonly Entry[], before: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid]!.seq < before) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function createMessageLog(): MessageLog {
  let entries: Entry[] = [];
  let bySid = new Map<string, Entry>();
  // Twilio answers a list filtered by number from an index; so does the
  // simulator (reconciliation looks messages up by number, and a scan of the
  // whole log for each look-up made a long chaos run CPU-bound in here).
  let byTo = new Map<string, Entry[]>();

  return {
    add(message) {
      const entry = { message, seq: entries.length, sentMs: Math.floor(Date.parse(message.acceptedAt) / 1000) * 1000 };
      entries.push(entry);
      bySid.set(message.sid, entry);
      const forTo = byTo.get(message.to);
      if (forTo === undefined) byTo.set(message.to, [entry]);
      else forTo.push(entry);
    },
    get(accountSid, sid) {
      const m = bySid.get(sid)?.message;
      return m !== undefined && m.accountSid === accountSid ? m : undefined;
    },
    all: () => entries.map((e) => ({ ...e.message })),
    clear() {
      entries = [];
      bySid = new Map();
      byTo = new Map();
    },
    page(accountSid, query) {
      const filters = filtersOf(query);
      if (typeof filters === 'string') return { invalid: filters };
      const pageSize = Math.min(1000, Math.max(1, Number(query.get('PageSize') ?? 50) || 50));
      const pageNumber = Math.max(0, Number(query.get('Page') ?? 0) || 0);
      const token = /^PA(\d+)$/.exec(query.get('PageToken') ?? '');
      const before = token === null ? Infinity : Number(token[1]);
      const to = query.get('To');
      const scope = to === null ? entries : (byTo.get(to) ?? []);
      const matching: SimMessage[] = [];
      const last = before === Infinity ? scope.length : firstAtOrAfter(scope, before);
      for (let i = last - 1; i >= 0 && matching.length <= pageSize; i--) {
        const { message: m, sentMs } = scope[i]!;
        if (m.accountSid === accountSid && filters.every((f) => f(m, sentMs))) matching.push(m);
      }
      const items = matching.slice(0, pageSize);
      const base = `${messagesUri(accountSid)}.json`;
      const filterParams = new URLSearchParams([...query].filter(([k]) => !['Page', 'PageSize', 'PageToken'].includes(k)));
      const uriWith = (extra: Record<string, string>) => {
        const q = new URLSearchParams(filterParams);
        for (const [k, v] of Object.entries(extra)) q.set(k, v);
        return `${base}?${q.toString()}`;
      };
      const lastItem = items.at(-1);
      const next =
        matching.length > pageSize && lastItem !== undefined
          ? uriWith({ PageSize: String(pageSize), Page: String(pageNumber + 1), PageToken: `PA${bySid.get(lastItem.sid)!.seq}` })
          : null;
      const current: Record<string, string> = { PageSize: String(pageSize), Page: String(pageNumber) };
      const pageToken = query.get('PageToken');
      if (pageToken !== null) current.PageToken = pageToken;
      return {
        page: {
          messages: items.map(messageResource),
          page: pageNumber,
          page_size: pageSize,
          start: pageNumber * pageSize,
          end: pageNumber * pageSize + Math.max(0, items.length - 1),
          first_page_uri: uriWith({ PageSize: String(pageSize), Page: '0' }),
          next_page_uri: next,
          // Only forward paging is offered; the SDK's list() and each() need no more.
          previous_page_uri: null,
          uri: uriWith(current),
        },
      };
    },
  };
}
