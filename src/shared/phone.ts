import { isSupportedCountry, parsePhoneNumberFromString } from 'libphonenumber-js/max';

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
  /** `reason` may name the number as parsed; `problem` never does (for what is stored). */
  | { ok: false; reason: string; problem: string };

/** Parse a number given in E.164 (or national format with a default country). */
export function parsePhone(input: string, defaultCountry?: string): ParsedPhone {
  const trimmed = input.trim();
  const fail = (problem: string, number?: string): ParsedPhone => ({ ok: false, reason: number === undefined ? problem : `${number} ${problem}`, problem });
  if (trimmed === '') return fail('is empty');
  if (trimmed.length > 32) return fail('is too long to be a phone number');
  const parsed = parsePhoneNumberFromString(
    trimmed,
    defaultCountry as Parameters<typeof parsePhoneNumberFromString>[1],
  );
  if (parsed === undefined) return fail('is not a phone number');
  if (!parsed.isValid()) return fail('is not a valid phone number', parsed.number);
  const country = parsed.country;
  if (country === undefined) return fail('has no country', parsed.number);
  return { ok: true, e164: parsed.number, country, type: (parsed.getType() ?? 'UNKNOWN') as NumberType };
}

/** A two-letter country code with a numbering plan (ISO 3166-1 alpha-2, as libphonenumber knows them): ZZ is not one. */
export function isCountryCode(code: string): boolean {
  return /^[A-Z]{2}$/.test(code) && isSupportedCountry(code);
}
