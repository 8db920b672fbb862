import { parsePhoneNumberFromString } from 'libphonenumber-js/max';

/**
 * Phone numbers (pure): validated and normalised to E.164 with
 * libphonenumber-js's full ("max") metadata, which also knows the number
 * type (mobile, fixed line, premium rate, …).
 */
export type NumberType =
  | 'MOBILE'
  | 'FIXED_LINE'
  | 'FIXED_LINE_OR_MOBILE'
  | 'PREMIUM_RATE'
  | 'TOLL_FREE'
  | 'SHARED_COST'
  | 'VOIP'
  | 'PERSONAL_NUMBER'
  | 'PAGER'
  | 'UAN'
  | 'VOICEMAIL'
  | 'UNKNOWN';

export type ParsedPhone =
  | { ok: true; e164: string; country: string; type: NumberType }
  | { ok: false; reason: string };

/** Parse a number given in E.164 (or national format with a default country). */
export function parsePhone(input: string, defaultCountry?: string): ParsedPhone {
  const trimmed = input.trim();
  if (trimmed === '') return { ok: false, reason: 'is empty' };
  if (trimmed.length > 32) return { ok: false, reason: 'is too long to be a phone number' };
  const parsed = parsePhoneNumberFromString(
    trimmed,
    defaultCountry as Parameters<typeof parsePhoneNumberFromString>[1],
  );
  if (parsed === undefined) return { ok: false, reason: 'is not a phone number' };
  if (!parsed.isValid()) return { ok: false, reason: `${parsed.number} is not a valid phone number` };
  const country = parsed.country;
  if (country === undefined) return { ok: false, reason: `${parsed.number} has no country` };
  return { ok: true, e164: parsed.number, country, type: (parsed.getType() ?? 'UNKNOWN') as NumberType };
}
