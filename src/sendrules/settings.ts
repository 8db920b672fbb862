import { validationError } from '../shared/errors.ts';
import { isCountryCode } from '../shared/phone.ts';
import { type CapPurpose, DEFAULT_FREQUENCY_CAPS, DEFAULT_HOURLY_CAP, effectiveFrequencyCaps, type FrequencyCap } from './caps.ts';
import { DEFAULT_WINDOWS, formatWindow, parseWindow, type Purpose } from './quietHours.ts';

/**
 * A workspace's sending rules as the API shows and takes them. Stored on the
 * workspace row; read by the pipeline at dispatch and claim.
 */
export const RULE_PURPOSES: readonly Purpose[] = ['transactional', 'marketing', 'appointment', 'cart_recovery'];

export type WindowText = { start: string; end: string };

export interface SendingRules {
  home_country: string;
  /** null = the home country only */
  allowed_countries: string[] | null;
  /** per purpose: a local window; null or absent = the default (never "no quiet hours" by omission) */
  send_windows: Partial<Record<Purpose, WindowText | null>>;
  /** per purpose: a cap, null (no cap), or absent (the default) */
  frequency_caps: Partial<Record<CapPurpose, FrequencyCap | null>>;
  hourly_cap: number | null;
  double_opt_in: boolean;
  help_text: string | null;
  opt_in_prompt: string | null;
}

export type SendingRulesPatch = Partial<Omit<SendingRules, 'home_country'>>;

/** What is in force, defaults filled in (for display). */
export function effectiveRules(r: SendingRules) {
  const windows: Record<string, WindowText | null> = {};
  for (const p of RULE_PURPOSES) {
    const own = r.send_windows[p];
    if (own !== undefined && own !== null) windows[p] = own;
    else windows[p] = DEFAULT_WINDOWS[p] === null ? null : formatWindow(DEFAULT_WINDOWS[p]);
  }
  return {
    allowed_countries: r.allowed_countries ?? [r.home_country],
    send_windows: windows,
    frequency_caps: { ...Object.fromEntries(RULE_PURPOSES.map((p) => [p, null])), ...effectiveFrequencyCaps(r.frequency_caps) },
    hourly_cap: r.hourly_cap,
  };
}

/** Validate a patch; throws a 422 naming the field. Changes nothing itself. */
export function validateRulesPatch(patch: SendingRulesPatch): SendingRulesPatch {
  if (patch.allowed_countries !== undefined && patch.allowed_countries !== null) {
    const seen = new Set<string>();
    patch.allowed_countries.forEach((c, i) => {
      if (!isCountryCode(c)) throw validationError(`allowed_countries.${i}`, 'must be an ISO 3166-1 alpha-2 code of a country with a numbering plan, such as US');
      seen.add(c);
    });
    if (seen.size === 0) throw validationError('allowed_countries', 'must list at least one country (or be null for the home country)');
    patch = { ...patch, allowed_countries: [...seen] };
  }
  for (const [purpose, w] of Object.entries(patch.send_windows ?? {})) {
    if (!RULE_PURPOSES.includes(purpose as Purpose)) throw validationError(`send_windows.${purpose}`, `is not a purpose (${RULE_PURPOSES.join(', ')})`);
    if (w === null) continue;
    const parsed = parseWindow(w);
    if ('error' in parsed) throw validationError(`send_windows.${purpose}`, parsed.error);
  }
  for (const [purpose, cap] of Object.entries(patch.frequency_caps ?? {})) {
    if (!RULE_PURPOSES.includes(purpose as Purpose)) throw validationError(`frequency_caps.${purpose}`, `is not a purpose (${RULE_PURPOSES.join(', ')})`);
    if (cap === null) continue;
    if (!Number.isInteger(cap.count) || cap.count < 1) throw validationError(`frequency_caps.${purpose}.count`, 'must be a positive integer');
    if (!Number.isInteger(cap.hours) || cap.hours < 1 || cap.hours > 24 * 31) {
      throw validationError(`frequency_caps.${purpose}.hours`, 'must be a whole number of hours between 1 and 744');
    }
  }
  if (patch.hourly_cap !== undefined && patch.hourly_cap !== null && (!Number.isInteger(patch.hourly_cap) || patch.hourly_cap < 0)) {
    throw validationError('hourly_cap', 'must be a non-negative integer, or null for no cap');
  }
  return patch;
}

export { DEFAULT_FREQUENCY_CAPS, DEFAULT_HOURLY_CAP };
