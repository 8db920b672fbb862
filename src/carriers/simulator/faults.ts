/**
 * What can go wrong at the simulated carrier, and the pure functions that
 * decide, from a seeded random stream, what goes wrong for one request.
 */

/** Every field is optional; what is left out does not go wrong. JSON-serialisable. */
export interface FaultProfile {
  /** Delay before the create call answers (uniform between min and max). */
  latencyMs?: { min: number; max: number };
  /**
   * Twilio error codes answered instead of accepting, with their probability
   * (e.g. `{ "20429": 0.1, "21211": 0.01 }`). The HTTP status is Twilio's for
   * the code (see `httpStatusForCode`).
   */
  errors?: Record<string, number>;
  /** Accept and log the message, then destroy the socket without answering. */
  dropAfterAccept?: number;
  /** Accept and log the message, then never answer (the client times out). */
  hangAfterAccept?: number;
  /** Windows, in ms since the simulator started, during which creates fail. */
  outages?: { startMs: number; endMs: number }[];
  /** `error`: creates answer 503 (code 20503); `refuse`: the port stops listening. */
  outageMode?: 'error' | 'refuse';
  /** Probabilities of each final status; the rest is `delivered`. */
  finalStatus?: { undelivered?: number; failed?: number };
  /** Probability that each status callback is posted twice. */
  duplicateCallbacks?: number;
  /** Probability that a message's final callback is posted before its `sent` one. */
  reorderCallbacks?: number;
  /** Probability that a message's final callback is never posted (the message still reaches its final status). */
  loseFinalCallbacks?: number;
}

export const NO_FAULTS: FaultProfile = Object.freeze({});

/** Error codes a final `undelivered` / `failed` status carries. */
export const UNDELIVERED_CODES = [30003, 30005, 30006, 30007] as const;
export const FAILED_CODES = [30001, 30002] as const;

/** The HTTP status Twilio answers a create with for this error code. */
export function httpStatusForCode(code: number): number {
  switch (code) {
    case 20003:
      return 401;
    case 20404:
      return 404;
    case 20429:
      return 429;
    case 20500:
      return 500;
    case 20503:
      return 503;
    default:
      return 400;
  }
}

export { createRandom } from '../../shared/random.ts';

export interface CallbackPlan {
  /** Delay of the `sent` event, and of the final one after it, in ms. */
  sentDelayMs: number;
  finalDelayMs: number;
  duplicateSent: boolean;
  duplicateFinal: boolean;
  /** Post the final callback before the `sent` one. */
  reorder: boolean;
  /** Never post the final callback. */
  loseFinal: boolean;
}

export interface CreateDecision {
  latencyMs: number;
  /** An injected error code, answered instead of accepting. */
  errorCode: number | null;
  /** What happens to the HTTP answer after the message is accepted. */
  answer: 'answered' | 'dropped' | 'hung';
  final: { status: 'delivered' | 'undelivered' | 'failed'; errorCode: number | null };
  callbacks: CallbackPlan;
}

export interface CallbackDelays {
  sent: [number, number];
  final: [number, number];
}

const between = (u: number, [min, max]: readonly [number, number]) => Math.round(min + u * (max - min));
const pick = <T>(u: number, list: readonly T[]): T => list[Math.min(list.length - 1, Math.floor(u * list.length))]!;

/**
 * Decide everything about one create call. It always draws the same number
 * of values from `random`, whatever it decides, so the n-th request of a run
 * meets the same fate in every run with the same seed.
 */
export function decideCreate(profile: FaultProfile, random: () => number, delays: CallbackDelays): CreateDecision {
  // The last draw is spare, so a decision added later need not shift the sequences of existing seeds.
  const u = Array.from({ length: 12 }, () => random());
  const latency = profile.latencyMs ?? { min: 0, max: 0 };
  let errorCode: number | null = null;
  let cumulative = 0;
  for (const [code, p] of Object.entries(profile.errors ?? {})) {
    cumulative += p;
    if (u[1]! < cumulative) {
      errorCode = Number(code);
      break;
    }
  }
  const drop = profile.dropAfterAccept ?? 0;
  const hang = profile.hangAfterAccept ?? 0;
  const answer = u[2]! < drop ? 'dropped' : u[2]! < drop + hang ? 'hung' : 'answered';
  const undelivered = profile.finalStatus?.undelivered ?? 0;
  const failed = profile.finalStatus?.failed ?? 0;
  const final: CreateDecision['final'] =
    u[3]! < undelivered
      ? { status: 'undelivered', errorCode: pick(u[4]!, UNDELIVERED_CODES) }
      : u[3]! < undelivered + failed
        ? { status: 'failed', errorCode: pick(u[4]!, FAILED_CODES) }
        : { status: 'delivered', errorCode: null };
  const duplicate = profile.duplicateCallbacks ?? 0;
  return {
    latencyMs: between(u[0]!, [latency.min, latency.max]),
    errorCode,
    answer,
    final,
    callbacks: {
      sentDelayMs: between(u[5]!, delays.sent),
      finalDelayMs: between(u[6]!, delays.final),
      duplicateSent: u[7]! < duplicate,
      duplicateFinal: u[8]! < duplicate,
      reorder: u[9]! < (profile.reorderCallbacks ?? 0),
      loseFinal: u[10]! < (profile.loseFinalCallbacks ?? 0),
    },
  };
}

/** Is `elapsedMs` (since start) inside an outage window? */
export function inOutage(profile: FaultProfile, elapsedMs: number): boolean {
  return (profile.outages ?? []).some((o) => elapsedMs >= o.startMs && elapsedMs < o.endMs);
}

/** The next time (ms since start) after `elapsedMs` at which an outage starts or ends. */
export function nextOutageBoundary(profile: FaultProfile, elapsedMs: number): number | undefined {
  const times = (profile.outages ?? []).flatMap((o) => [o.startMs, o.endMs]).filter((t) => t > elapsedMs);
  return times.length === 0 ? undefined : Math.min(...times);
}

type Parsed = { ok: true; profile: FaultProfile } | { ok: false; errors: string[] };

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isProbability = (v: unknown): v is number => typeof v === 'number' && v >= 0 && v <= 1;
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** Check a profile that arrived as JSON (the admin API) before it is used. */
export function parseFaultProfile(input: unknown): Parsed {
  if (!isRecord(input)) return { ok: false, errors: ['the fault profile must be a JSON object'] };
  const errors: string[] = [];
  const profile: FaultProfile = {};
  const known = new Set([
    'latencyMs',
    'errors',
    'dropAfterAccept',
    'hangAfterAccept',
    'outages',
    'outageMode',
    'finalStatus',
    'duplicateCallbacks',
    'reorderCallbacks',
    'loseFinalCallbacks',
  ]);
  for (const key of Object.keys(input)) if (!known.has(key)) errors.push(`unknown field ${key}`);
  const { latencyMs, outages, finalStatus, outageMode } = input;
  if (latencyMs !== undefined) {
    if (isRecord(latencyMs) && isTime(latencyMs.min) && isTime(latencyMs.max) && latencyMs.min <= latencyMs.max)
      profile.latencyMs = { min: latencyMs.min, max: latencyMs.max };
    else errors.push('latencyMs must be { min, max } with 0 <= min <= max');
  }
  if (input.errors !== undefined) {
    const table = input.errors;
    if (isRecord(table) && Object.entries(table).every(([k, p]) => /^\d{5}$/.test(k) && isProbability(p)))
      profile.errors = table as Record<string, number>;
    else errors.push('errors must map five-digit Twilio codes to probabilities in [0, 1]');
  }
  for (const key of ['dropAfterAccept', 'hangAfterAccept', 'duplicateCallbacks', 'reorderCallbacks', 'loseFinalCallbacks'] as const) {
    const value = input[key];
    if (value === undefined) continue;
    if (isProbability(value)) profile[key] = value;
    else errors.push(`${key} must be a probability in [0, 1]`);
  }
  if (outages !== undefined) {
    if (Array.isArray(outages) && outages.every((o) => isRecord(o) && isTime(o.startMs) && isTime(o.endMs) && o.startMs <= o.endMs))
      profile.outages = (outages as { startMs: number; endMs: number }[]).map((o) => ({ startMs: o.startMs, endMs: o.endMs }));
    else errors.push('outages must be a list of { startMs, endMs } with 0 <= startMs <= endMs');
  }
  if (outageMode !== undefined) {
    if (outageMode === 'error' || outageMode === 'refuse') profile.outageMode = outageMode;
    else errors.push("outageMode must be 'error' or 'refuse'");
  }
  if (finalStatus !== undefined) {
    const { undelivered = 0, failed = 0 } = isRecord(finalStatus) ? finalStatus : { undelivered: -1 };
    if (isRecord(finalStatus) && isProbability(undelivered) && isProbability(failed) && undelivered + failed <= 1)
      profile.finalStatus = { undelivered, failed };
    else errors.push('finalStatus must be { undelivered, failed } probabilities summing to at most 1');
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, profile };
}
