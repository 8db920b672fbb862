import type { DbOrTx } from '../db/db.ts';
import { validationError } from '../shared/errors.ts';
import { parseDateTime } from '../shared/dates.ts';
import { parsePhone } from '../shared/phone.ts';
import { CONSENT_PURPOSES, type ConsentPurpose, type ConsentState, deriveConsent } from './consent.ts';
import { appendConsentEvents, type ConsentEventRow, consentHistory } from './consent.store.ts';

/** Sources a client may claim through the API; inbound SMS and carrier opt-outs are recorded by Credence itself. */
export const API_SOURCES = ['api', 'checkout_form', 'import'] as const;
export type ApiSource = (typeof API_SOURCES)[number];

export interface ConsentInput {
  phone: string;
  purposes: readonly ConsentPurpose[];
  action: 'granted' | 'revoked';
  source: ApiSource;
  evidence?: Record<string, unknown>;
  /** when the person acted; default now, never in the future */
  occurred_at?: string;
}

export interface ValidConsent extends Omit<ConsentInput, 'phone' | 'occurred_at'> {
  phone: string;
  occurredAt: string | undefined;
}

const CLOCK_SKEW_MS = 5 * 60_000;

/** Validate one consent record; `at` prefixes field names in bulk requests (`items/3/phone`). */
export function validateConsent(input: ConsentInput, at = ''): ValidConsent {
  const phone = parsePhone(input.phone);
  if (!phone.ok) throw validationError(`${at}phone`, phone.reason);
  if (input.purposes.length === 0) throw validationError(`${at}purposes`, 'must name at least one purpose');
  for (const p of input.purposes) {
    if (!CONSENT_PURPOSES.includes(p)) throw validationError(`${at}purposes`, `must be among ${CONSENT_PURPOSES.join(', ')}`);
  }
  let occurredAt: string | undefined;
  if (input.occurred_at !== undefined) {
    const t = parseDateTime(`${at}occurred_at`, input.occurred_at);
    if (t.getTime() > Date.now() + CLOCK_SKEW_MS) throw validationError(`${at}occurred_at`, 'must not be in the future');
    occurredAt = t.toISOString();
  }
  return { ...input, phone: phone.e164, occurredAt, purposes: [...new Set(input.purposes)] };
}

export interface RecordedConsent {
  phone: string;
  events: ConsentEventRow[];
  state: Record<ConsentPurpose, ConsentState>;
  /** A double opt-in request was recorded: the confirmation text must go out. */
  confirmationNeeded: boolean;
}

/**
 * Append validated consent records. With double opt-in on, a marketing grant
 * is recorded as `requested` (pending the person's YES) unless marketing is
 * already granted. Runs in the caller's transaction.
 */
export async function recordConsents(
  trx: DbOrTx,
  scope: { organizationId: string; workspaceId: string; doubleOptIn: boolean; actor: string },
  items: readonly ValidConsent[],
): Promise<RecordedConsent[]> {
  const out: RecordedConsent[] = [];
  for (const item of items) {
    const before = deriveConsent(toEvents(await consentHistory(trx, scope.workspaceId, item.phone)));
    let confirmationNeeded = false;
    const events = await appendConsentEvents(
      trx,
      item.purposes.map((purpose) => {
        let action: 'granted' | 'revoked' | 'requested' = item.action;
        if (action === 'granted' && purpose === 'marketing' && scope.doubleOptIn && before.marketing !== 'granted') {
          action = 'requested';
          confirmationNeeded = true;
        }
        return {
          organization_id: scope.organizationId,
          workspace_id: scope.workspaceId,
          phone: item.phone,
          purpose,
          action,
          source: item.source,
          evidence: item.evidence ?? {},
          actor: scope.actor,
          ...(item.occurredAt !== undefined && { occurred_at: item.occurredAt }),
        };
      }),
    );
    const state = deriveConsent(toEvents(await consentHistory(trx, scope.workspaceId, item.phone)));
    // Only a request that left marketing pending asks for the YES: a backdated grant under a later
    // STOP leaves it revoked, and the question (a system message, which consent does not stop)
    // would text a number that opted out.
    out.push({ phone: item.phone, events, state, confirmationNeeded: confirmationNeeded && state.marketing === 'pending' });
  }
  return out;
}

export function toEvents(rows: readonly ConsentEventRow[]) {
  return rows.map((r) => ({ seq: r.seq, purpose: r.purpose, action: r.action, at: r.occurred_at }));
}

export async function currentConsent(
  db: DbOrTx,
  workspaceId: string,
  phone: string,
): Promise<{ state: Record<ConsentPurpose, ConsentState>; history: ConsentEventRow[] }> {
  const history = await consentHistory(db, workspaceId, phone);
  return { state: deriveConsent(toEvents(history)), history };
}
