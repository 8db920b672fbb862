import type { NumberType } from '../shared/phone.ts';

/**
 * Number safety (pure): which destinations a workspace may text at all,
 * decided before any credit is reserved and again at claim (the allow-list
 * can change while messages wait).
 */
export type NumberRefusal = 'premium_rate' | 'shared_cost' | 'not_mobile' | 'country_not_allowed';

export type NumberCheck = { ok: true } | { ok: false; reason: NumberRefusal; detail: string };

/** The destination countries of a workspace: its allow-list, or its home country alone. */
export function allowedCountries(ws: { allowed_countries: readonly string[] | null; home_country: string }): readonly string[] {
  return ws.allowed_countries ?? [ws.home_country];
}

export function countryAllowed(country: string, allowed: readonly string[]): boolean {
  return allowed.includes(country);
}

/**
 * Premium-rate and shared-cost numbers cost the recipient or us money and are
 * a fraud vector: refused. A number known to be a fixed line cannot receive
 * SMS: refused as `not_mobile`. `FIXED_LINE_OR_MOBILE` (the whole US and
 * Canada plan, for example) is not certain, so it passes.
 */
export function checkNumber(phone: { e164: string; country: string; type: NumberType }, allowed: readonly string[]): NumberCheck {
  switch (phone.type) {
    case 'PREMIUM_RATE':
      return { ok: false, reason: 'premium_rate', detail: `${phone.e164} is a premium-rate number` };
    case 'SHARED_COST':
      return { ok: false, reason: 'shared_cost', detail: `${phone.e164} is a shared-cost number` };
    case 'FIXED_LINE':
      return { ok: false, reason: 'not_mobile', detail: `${phone.e164} is a fixed-line number and cannot receive SMS` };
    default:
      break;
  }
  if (!countryAllowed(phone.country, allowed)) {
    return {
      ok: false,
      reason: 'country_not_allowed',
      detail: `${phone.country} is not among this workspace's destination countries (${allowed.join(', ')})`,
    };
  }
  return { ok: true };
}
