/**
 * Consent derivation (pure). The consent log is append-only and is the truth:
 * the current state of each purpose is folded from it in log order (`at`, then
 * `seq`), never
 * stored and edited in place.
 */
export const CONSENT_PURPOSES = ['marketing', 'transactional', 'appointment', 'cart_recovery'] as const;
export type ConsentPurpose = (typeof CONSENT_PURPOSES)[number];

/** requested = double opt-in pending the person's YES. */
export type ConsentAction = 'granted' | 'revoked' | 'requested';

export const CONSENT_SOURCES = ['api', 'checkout_form', 'inbound_sms', 'carrier_opt_out', 'operator', 'import'] as const;
export type ConsentSource = (typeof CONSENT_SOURCES)[number];

export interface ConsentEvent {
  seq: number;
  purpose: ConsentPurpose;
  action: ConsentAction;
  at: Date;
}

export type ConsentState = 'granted' | 'pending' | 'revoked' | 'none';

/** One step of the fold. A new double opt-in request never downgrades a grant. */
function step(state: ConsentState, action: ConsentAction): ConsentState {
  switch (action) {
    case 'granted':
      return 'granted';
    case 'revoked':
      return 'revoked';
    case 'requested':
      return state === 'granted' ? 'granted' : 'pending';
    default: {
      const unhandled: never = action;
      throw new Error(`unknown consent action ${String(unhandled)}`);
    }
  }
}

function noConsent(): Record<ConsentPurpose, ConsentState> {
  return { marketing: 'none', transactional: 'none', appointment: 'none', cart_recovery: 'none' };
}

/**
 * Log order: when the person acted (`at`), then the order we recorded it
 * (`seq`). A consent form from last month imported today must not undo a
 * STOP sent yesterday.
 */
function compareLog(a: ConsentEvent, b: ConsentEvent): number {
  return a.at.getTime() - b.at.getTime() || a.seq - b.seq;
}

function bySeq(events: readonly ConsentEvent[]): ConsentEvent[] {
  return [...events].sort(compareLog);
}

/** Current state per purpose, folded from the log in log order (at, seq) (the log is the truth; nothing is edited in place). */
export function deriveConsent(events: readonly ConsentEvent[]): Record<ConsentPurpose, ConsentState> {
  const state = noConsent();
  for (const e of bySeq(events)) state[e.purpose] = step(state[e.purpose], e.action);
  return state;
}

export function stateOf(events: readonly ConsentEvent[], purpose: ConsentPurpose): ConsentState {
  return deriveConsent(events.filter((e) => e.purpose === purpose))[purpose];
}

/**
 * The same result as `deriveConsent`, computed the way the SQL does it (no
 * fold, so it can be a query over the log). Per purpose:
 *   let L = the latest `granted`/`revoked` event (by at, then seq);
 *   if L is `granted`                                      → granted
 *   else if a `requested` event exists after L (or at all
 *        when there is no L)                               → pending
 *   else if L is `revoked`                                 → revoked
 *   else                                                   → none
 * A property test holds this equal to the fold; change both or neither.
 */
export function deriveConsentClosedForm(events: readonly ConsentEvent[]): Record<ConsentPurpose, ConsentState> {
  const state = noConsent();
  for (const purpose of CONSENT_PURPOSES) {
    const log = bySeq(events.filter((e) => e.purpose === purpose));
    const last = log.filter((e) => e.action === 'granted' || e.action === 'revoked').at(-1);
    const requestedAfter = log.some((e) => e.action === 'requested' && (last === undefined || compareLog(e, last) > 0));
    if (last?.action === 'granted') state[purpose] = 'granted';
    else if (requestedAfter) state[purpose] = 'pending';
    else if (last?.action === 'revoked') state[purpose] = 'revoked';
  }
  return state;
}

/**
 * Purposes that need an express grant (marketing, cart_recovery); transactional
 * and appointment messages are implied by the person's own action (they gave
 * their number for it) and need only "not revoked".
 */
export const EXPRESS_CONSENT: ReadonlySet<ConsentPurpose> = new Set<ConsentPurpose>(['marketing', 'cart_recovery']);

export function consentAllows(purpose: ConsentPurpose, state: ConsentState): boolean {
  const express = EXPRESS_CONSENT.has(purpose);
  switch (state) {
    case 'granted':
      return true;
    case 'revoked':
      return false;
    // A pending double opt-in is not consent yet; for implied purposes it is
    // simply not a revocation.
    case 'pending':
    case 'none':
      return !express;
    default: {
      const unhandled: never = state;
      throw new Error(`unknown consent state ${String(unhandled)}`);
    }
  }
}

/**
 * What an opt-in keyword (START, UNSTOP, YES) grants: the purposes that are
 * pending (double opt-in confirmed by YES/START), plus the purposes currently
 * revoked that were granted at some point before (START restores what STOP
 * took) or that need no express consent. Never grants marketing to someone who
 * never asked for it: a request that was never confirmed and then revoked is
 * not restored, because the person never said yes to it.
 */
export function optInPlan(events: readonly ConsentEvent[]): ConsentPurpose[] {
  const current = deriveConsent(events);
  return CONSENT_PURPOSES.filter((purpose) => {
    const state = current[purpose];
    switch (state) {
      case 'pending':
        return true;
      case 'revoked':
        // While revoked, any earlier grant necessarily precedes the revocation.
        return !EXPRESS_CONSENT.has(purpose) || events.some((e) => e.purpose === purpose && e.action === 'granted');
      // granted: nothing to do; none: implied purposes are already allowed and
      // express ones were never asked for.
      case 'granted':
      case 'none':
        return false;
      default: {
        const unhandled: never = state;
        throw new Error(`unknown consent state ${String(unhandled)}`);
      }
    }
  });
}
