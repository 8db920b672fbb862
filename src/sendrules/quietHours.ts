import { IANAZone } from 'luxon';
import { type HolidayCalendar, isPublicHoliday, legalLimit } from './jurisdictions.ts';

/**
 * Quiet hours (pure): when a message may reach a recipient, by the
 * recipient's local wall clock. `at` is always passed in; nothing here reads
 * the clock.
 */

export type Purpose = 'transactional' | 'marketing' | 'appointment' | 'cart_recovery';

/** Local clock window [start, end) in minutes after local midnight; 0 <= start < end <= 1440. */
export interface Window {
  start: number;
  end: number;
}

/** null: no clock limit (a transactional message answers the person's own action, so it goes at once). */
export const DEFAULT_WINDOWS: Readonly<Record<Purpose, Window | null>> = Object.freeze({
  transactional: null,
  marketing: { start: 10 * 60, end: 19 * 60 },
  appointment: { start: 8 * 60, end: 21 * 60 },
  cart_recovery: { start: 9 * 60, end: 20 * 60 },
});

/** window null = any time of day; the day rules still apply. */
export interface SendPolicy {
  window: Window | null;
  noSundays: boolean;
  noPublicHolidaysOf: HolidayCalendar | null;
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
/** How far nextAllowedInstant looks for an instant allowed in every zone. */
const COMMON_HORIZON_MS = 14 * DAY_MS;
/** A valid policy allows some instant within 3 days (at most Sunday + a Monday holiday are lost); 31 is slack. */
const SINGLE_HORIZON_MS = 31 * DAY_MS;
/**
 * Offset changes are found by sampling at this step, then bisecting. Zones
 * change offset at most a few times a year, never twice within hours, so a
 * change and its reversal cannot both fall between two samples.
 */
const OFFSET_SCAN_STEP_MS = 3 * 3_600_000;

// ---- windows -------------------------------------------------------------

export function isValidWindow(w: Window): boolean {
  return Number.isInteger(w.start) && Number.isInteger(w.end) && w.start >= 0 && w.start < w.end && w.end <= 1440;
}

function clockMinutes(text: unknown, allowEndOfDay: boolean): number | null {
  const m = typeof text === 'string' ? /^(\d\d):(\d\d)$/.exec(text) : null;
  if (m === null) return null;
  const hours = Number(m[1]);
  const minutes = Number(m[2]);
  if (minutes > 59) return null;
  if (hours < 24) return hours * 60 + minutes;
  return allowEndOfDay && hours === 24 && minutes === 0 ? 1440 : null;
}

/** 'HH:MM' to a Window; '24:00' is accepted as an end (the window runs to midnight). */
export function parseWindow(text: { start: string; end: string }): Window | { error: string } {
  const start = clockMinutes(text.start, false);
  if (start === null) return { error: 'start must be a time of day written HH:MM, from 00:00 to 23:59' };
  const end = clockMinutes(text.end, true);
  if (end === null) return { error: 'end must be a time of day written HH:MM, from 00:00 to 24:00' };
  if (end <= start) return { error: 'end must be after start (a window cannot span midnight)' };
  return { start, end };
}

export function formatWindow(w: Window): { start: string; end: string } {
  const hhmm = (minutes: number) =>
    `${String(Math.floor(minutes / 60)).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;
  return { start: hhmm(w.start), end: hhmm(w.end) };
}

function intersect(a: Window, b: Window): Window | null {
  const start = Math.max(a.start, b.start);
  const end = Math.min(a.end, b.end);
  return start < end ? { start, end } : null;
}

// ---- policy --------------------------------------------------------------

/**
 * The workspace's window for the purpose (or the default), narrowed by the
 * legal limits (data, in jurisdictions.ts).
 *
 * - workspaceWindow undefined or null: the purpose's default window. (null is
 *   "not configured", not "no quiet hours": dropping quiet hours for marketing
 *   must not happen by leaving a column empty.)
 * - When the workspace window and the legal window do not overlap, the legal
 *   window is used: sending inside it is lawful, and deferring for ever is
 *   never what the workspace wanted.
 */
export function sendPolicy(input: {
  purpose: Purpose;
  country: string;
  e164: string;
  workspaceWindow?: Window | null;
}): SendPolicy {
  const { purpose, country, e164, workspaceWindow } = input;
  if (workspaceWindow !== undefined && workspaceWindow !== null && !isValidWindow(workspaceWindow)) {
    throw new RangeError(`invalid window ${JSON.stringify(workspaceWindow)}`);
  }
  const chosen = workspaceWindow ?? DEFAULT_WINDOWS[purpose];
  const limit = legalLimit(country, e164, purpose);
  if (limit === null) return { window: chosen, noSundays: false, noPublicHolidaysOf: null };
  const window = chosen === null ? limit.window : (intersect(chosen, limit.window) ?? limit.window);
  return { window, noSundays: limit.noSundays, noPublicHolidaysOf: limit.noPublicHolidaysOf };
}

function assertPolicy(policy: SendPolicy): void {
  if (policy.window !== null && !isValidWindow(policy.window)) {
    throw new RangeError(`invalid window ${JSON.stringify(policy.window)}`);
  }
}

function zoneNamed(name: string): IANAZone {
  // create() caches one instance per name; isValidZone() would build a new Intl formatter on every call.
  const zone = IANAZone.create(name);
  if (!zone.isValid) throw new RangeError(`unknown time zone ${name}`);
  return zone;
}

function instant(at: Date): number {
  const ms = at.getTime();
  if (Number.isNaN(ms)) throw new RangeError('invalid date');
  return ms;
}

// ---- the rule, by the local wall clock -------------------------------------

/** Whether a message may reach a recipient in `zone` at `at`: the window is [start, end) on the local wall clock. */
export function isAllowedAt(at: Date, zone: string, policy: SendPolicy): boolean {
  assertPolicy(policy);
  const t = instant(at);
  // the local wall clock, read as if it were UTC
  const local = new Date(t + offsetAtMinute(zoneNamed(zone), t));
  if (policy.noSundays && local.getUTCDay() === 0) return false;
  if (
    policy.noPublicHolidaysOf !== null &&
    isPublicHoliday(policy.noPublicHolidaysOf, local.getUTCFullYear(), local.getUTCMonth() + 1, local.getUTCDate())
  ) {
    return false;
  }
  if (policy.window === null) return true;
  const msOfDay = local.getTime() - Math.floor(local.getTime() / DAY_MS) * DAY_MS;
  return msOfDay >= policy.window.start * MINUTE_MS && msOfDay < policy.window.end * MINUTE_MS;
}

/**
 * A zone's offset (ms) at instant t, remembered for t's minute: the claim
 * asks for the same few zones at the same instant for every message of a
 * batch, and each look-up through Intl costs tens of microseconds. Offsets
 * change only on whole minutes (modern tz data), so the minute's answer holds
 * for all of it. One entry per zone; not a cache of the process's history.
 */
const offsetByZone = new Map<string, { minute: number; offset: number }>();

function offsetAtMinute(zone: IANAZone, t: number): number {
  const minute = Math.floor(t / MINUTE_MS);
  const hit = offsetByZone.get(zone.name);
  if (hit !== undefined && hit.minute === minute) return hit.offset;
  const offset = offsetMs(zone, t);
  offsetByZone.set(zone.name, { minute, offset });
  return offset;
}

/*
 * The search works on "local clock" milliseconds: instant + zone offset, read
 * as if it were UTC, so that day d of the local calendar is
 * [d * DAY_MS, (d + 1) * DAY_MS). Between two offset changes the local clock
 * runs with the instant, so the earliest allowed local time maps back to the
 * earliest allowed instant by subtracting the offset.
 */

function dayAllowed(localDay: number, policy: SendPolicy): boolean {
  const date = new Date(localDay * DAY_MS); // calendar arithmetic only, in UTC
  if (policy.noSundays && date.getUTCDay() === 0) return false;
  return !(
    policy.noPublicHolidaysOf !== null &&
    isPublicHoliday(policy.noPublicHolidaysOf, date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate())
  );
}

/** Earliest local-clock time >= localMs that the policy allows (Infinity if none within 16 days). */
function earliestLocal(localMs: number, policy: SendPolicy): number {
  const open = (policy.window?.start ?? 0) * MINUTE_MS;
  const close = (policy.window?.end ?? 1440) * MINUTE_MS;
  const first = Math.floor(localMs / DAY_MS);
  for (let day = first; day < first + 16; day++) {
    if (!dayAllowed(day, policy)) continue;
    if (localMs < day * DAY_MS + close) return Math.max(localMs, day * DAY_MS + open);
  }
  return Infinity;
}

function offsetMs(zone: IANAZone, t: number): number {
  return zone.offset(t) * MINUTE_MS;
}

/** First instant in (from, to] whose offset differs from `offset`, or null. */
function firstOffsetChange(zone: IANAZone, from: number, to: number, offset: number): number | null {
  for (let lo = from; lo < to; ) {
    const hi = Math.min(lo + OFFSET_SCAN_STEP_MS, to);
    if (offsetMs(zone, hi) !== offset) {
      let a = lo; // offset(a) === offset, offset(b) !== offset
      let b = hi;
      while (b - a > 1) {
        const mid = Math.floor((a + b) / 2);
        if (offsetMs(zone, mid) === offset) a = mid;
        else b = mid;
      }
      return b;
    }
    lo = hi;
  }
  return null;
}

/** Earliest instant in [from, limit] allowed in one zone, or null. */
function nextAllowedIn(zone: IANAZone, from: number, limit: number, policy: SendPolicy): number | null {
  let t = from;
  while (t <= limit) {
    const offset = offsetAtMinute(zone, t);
    const candidate = earliestLocal(t + offset, policy) - offset; // if the offset holds until then
    const change = firstOffsetChange(zone, t, Math.min(candidate, limit), offset);
    if (change === null) return candidate <= limit ? candidate : null;
    // The clock jumps before the candidate: nothing in [t, change) was allowed, so
    // start again from the jump. This is also how a window opening inside a
    // spring-forward gap lands on the first instant after the gap.
    t = change;
  }
  return null;
}

/** Earliest instant in [from, limit] allowed in every zone, or null. */
function nextAllowedInAll(zones: readonly IANAZone[], from: number, limit: number, policy: SendPolicy): number | null {
  // Each step moves t to the earliest instant one zone allows, which is never
  // past an instant all zones allow; it stops when a full round moves nothing.
  let t = from;
  let unmoved = 0;
  for (let i = 0; unmoved < zones.length; i = (i + 1) % zones.length) {
    const next = nextAllowedIn(zones[i] as IANAZone, t, limit, policy);
    if (next === null) return null;
    if (next === t) unmoved++;
    else {
      t = next;
      unmoved = 1;
    }
  }
  return t;
}

/**
 * The earliest instant >= at allowed in EVERY zone given (a number whose zone
 * is ambiguous must be inside its window everywhere it may be). If the zones
 * have no common allowed instant within 14 days (a number known only by its
 * calling code, +1 for all of North America and its islands from Guam to
 * Puerto Rico, with a narrow window), the most likely zone, zones[0], and as
 * many of the others as still share a window with it, nearest clock first:
 * for a US number of unknown area that keeps New York to Honolulu and
 * leaves Guam out. (It was zones[0] alone: 10:00 in New York, 07:00 in Los
 * Angeles, 05:00 in Honolulu.) Returns a copy of `at` (same ms) when allowed now.
 */
export function nextAllowedInstant(at: Date, zones: readonly string[], policy: SendPolicy): Date {
  assertPolicy(policy);
  if (zones.length === 0) throw new RangeError('nextAllowedInstant needs at least one zone');
  const from = instant(at);
  // Zones without a common window are a slow search (tens of ms for +1's 42 zones): the
  // zones kept for such a set are remembered for an hour of `at`, per policy.
  const key = zones.length > 1 ? `${zones.join(' ')}|${JSON.stringify(policy)}` : undefined;
  const known = key === undefined ? undefined : keptZones.get(key);
  if (known !== undefined && from >= known.from && from < known.from + KEPT_FOR_MS) {
    const t = nextAllowedInAll(known.kept, from, from + COMMON_HORIZON_MS, policy);
    if (t !== null) return new Date(t);
  }
  const resolved = zones.map(zoneNamed);
  const common = nextAllowedInAll(resolved, from, from + COMMON_HORIZON_MS, policy);
  if (common !== null) return new Date(common);
  const first = resolved[0] as IANAZone;
  const offsetOf = (z: IANAZone) => z.offset(from);
  const byNearness = resolved.slice(1).sort((a, b) => Math.abs(offsetOf(a) - offsetOf(first)) - Math.abs(offsetOf(b) - offsetOf(first)));
  let kept: IANAZone[] = [first];
  let best = nextAllowedIn(first, from, from + SINGLE_HORIZON_MS, policy);
  for (const zone of byNearness) {
    const withIt = nextAllowedInAll([...kept, zone], from, from + COMMON_HORIZON_MS, policy);
    if (withIt === null) continue;
    kept = [...kept, zone];
    best = withIt;
  }
  if (best === null) throw new Error('a valid send policy allows some instant in every month');
  if (key !== undefined) {
    if (keptZones.size >= 1_000) keptZones.clear();
    keptZones.set(key, { from, kept });
  }
  return new Date(best);
}

const KEPT_FOR_MS = 3_600_000;
const keptZones = new Map<string, { from: number; kept: IANAZone[] }>();
