import { type SendPolicy, nextAllowedInstant, parseWindow, type Purpose, sendPolicy, type Window } from '../sendrules/quietHours.ts';
import { allowedCountries, countryAllowed } from '../sendrules/numberSafety.ts';
import { recipientZones } from '../sendrules/timezones.ts';
import { checkGates, type GateContext } from './gates.ts';
import type { MessageRow } from './messages.store.ts';

/**
 * The send-time decision for one message (pure), taken at dispatch (before
 * any credit is reserved) and again at claim (G5, G6): gates, destination
 * country, consent, then the recipient's local send window. Caps and the
 * sender rate need other messages' state and are applied after it.
 */
export type SendDecision =
  | { action: 'go' }
  | { action: 'block'; reason: string }
  | { action: 'skip'; reason: 'country_not_allowed' | 'no_consent' | 'campaign_cancelled' }
  | { action: 'defer'; reason: 'quiet_hours'; until: Date };

/** The workspace columns and derived flags each candidate row is read with. */
export interface RuleColumns {
  sms_enabled: boolean;
  home_country: string;
  allowed_countries: string[] | null;
  send_windows: Record<string, { start: string; end: string } | null>;
  /** credence_consent_allows(…) evaluated in the same statement that locked the row */
  consent_ok: boolean;
  campaign_running: boolean;
  /** its campaign was cancelled or completed */
  campaign_ended: boolean;
  subscription_ok: boolean;
}

export type RuleRow = Pick<MessageRow, 'purpose' | 'producer' | 'country' | 'to_number' | 'recipient_timezone'> & RuleColumns;

/** A workspace's window for a purpose: its own setting, or undefined for the purpose's default. */
export function workspaceWindow(windows: RuleColumns['send_windows'], purpose: Purpose): Window | undefined {
  const w = windows[purpose];
  if (w === null || w === undefined) return undefined;
  const parsed = parseWindow(w);
  return 'error' in parsed ? undefined : parsed;
}

export function policyFor(row: RuleRow): SendPolicy {
  const own = workspaceWindow(row.send_windows, row.purpose);
  return sendPolicy({ purpose: row.purpose, country: row.country, e164: row.to_number, ...(own !== undefined && { workspaceWindow: own }) });
}

/**
 * `withinMs`: the carrier call may come that long after `now` (the claim's
 * wait for a sender rate slot); the recipient's window must still be open
 * then, or the message is deferred to its next opening (G5: quiet hours at
 * the moment of sending, not only at the claim).
 */
export function decide(row: RuleRow, gates: GateContext, now: Date, withinMs = 0): SendDecision {
  // a message of a campaign that has ended will never go: done, not blocked
  if (row.campaign_ended) return { action: 'skip', reason: 'campaign_cancelled' };
  const gate = checkGates({ ...gates, campaignRunning: row.campaign_running, subscriptionOk: row.subscription_ok });
  if (!gate.pass) return { action: 'block', reason: gate.reason };
  if (!countryAllowed(row.country, allowedCountries(row))) return { action: 'skip', reason: 'country_not_allowed' };
  if (!row.consent_ok) return { action: 'skip', reason: 'no_consent' };
  // System replies (HELP, the opt-in question) answer the person's own text: at once.
  if (row.producer === 'system') return { action: 'go' };
  const policy = policyFor(row);
  if (policy.window === null && !policy.noSundays && policy.noPublicHolidaysOf === null) return { action: 'go' };
  const zones = recipientZones({ contactZone: row.recipient_timezone, e164: row.to_number, country: row.country });
  const at = nextAllowedInstant(now, zones, policy);
  if (at.getTime() > now.getTime()) return { action: 'defer', reason: 'quiet_hours', until: at };
  if (withinMs > 0) {
    // a window is one stretch of the day: open at both ends, it is open in between
    const last = new Date(now.getTime() + withinMs);
    const next = nextAllowedInstant(last, zones, policy);
    if (next.getTime() > last.getTime()) return { action: 'defer', reason: 'quiet_hours', until: next };
  }
  return { action: 'go' };
}
