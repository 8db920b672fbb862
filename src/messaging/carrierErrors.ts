/**
 * Carrier error classification (pure data + one function). `transient`
 * errors are retried with backoff up to the attempt limit; `permanent` ones
 * fail the message at once and release its credits.
 */
export type ErrorClass = 'transient' | 'permanent';

export interface ErrorRule {
  class: ErrorClass;
  meaning: string;
  /** The number opted out: record it in the consent log. */
  optOut?: true;
}

export const CARRIER_ERRORS: Readonly<Record<number, ErrorRule>> = Object.freeze({
  20429: { class: 'transient', meaning: 'too many requests' },
  30001: { class: 'transient', meaning: 'queue overflow' },
  30003: { class: 'transient', meaning: 'unreachable destination handset' },
  20500: { class: 'transient', meaning: 'carrier internal error' },
  20503: { class: 'transient', meaning: 'carrier unavailable' },
  21211: { class: 'permanent', meaning: "invalid 'To' phone number" },
  21408: { class: 'permanent', meaning: 'permission to send to this region is not enabled' },
  21610: { class: 'permanent', meaning: 'recipient unsubscribed (replied STOP)', optOut: true },
  21612: { class: 'permanent', meaning: 'the To number cannot be reached from this sender' },
  21614: { class: 'permanent', meaning: "'To' number is not a valid mobile number" },
  30005: { class: 'permanent', meaning: 'unknown destination handset' },
  30006: { class: 'permanent', meaning: 'landline or unreachable carrier' },
  30007: { class: 'permanent', meaning: 'carrier filtered the message' },
});

/** Classify an error answer: known codes by the table, others by HTTP status. */
export function classifyCarrierError(code: number | null, httpStatus: number): ErrorRule & { code: number | null } {
  const known = code === null ? undefined : CARRIER_ERRORS[code];
  if (known !== undefined) return { ...known, code };
  if (httpStatus === 429 || httpStatus >= 500) return { class: 'transient', meaning: `HTTP ${httpStatus}`, code };
  return { class: 'permanent', meaning: `HTTP ${httpStatus}`, code };
}
