import type { Purpose, Window } from './quietHours.ts';

/**
 * Legal limits on when non-transactional messages may reach a recipient, as
 * data. Kept apart from the quiet-hours logic so that a new jurisdiction is a
 * new entry here, not a new branch there. Times are the recipient's local
 * wall clock.
 */

export type HolidayCalendar = 'FR';

export interface LegalLimit {
  /** Human-readable source of the rule, for logs and docs. */
  rule: string;
  purposes: readonly Purpose[];
  window: Window;
  noSundays: boolean;
  noPublicHolidaysOf: HolidayCalendar | null;
}

/** Replies to the person's own action (transactional) are never limited. */
const SOLICITED_OR_NOT: readonly Purpose[] = ['marketing', 'appointment', 'cart_recovery'];

const US_FEDERAL: LegalLimit = {
  rule: 'US (TCPA): 08:00–21:00 recipient time',
  purposes: SOLICITED_OR_NOT,
  window: { start: 8 * 60, end: 21 * 60 },
  noSundays: false,
  noPublicHolidaysOf: null,
};

/**
 * States whose own law ends the day at 20:00. The state is recognised by the
 * area code (the three digits after +1); numbers are portable, so this is the
 * best evidence we have before a send.
 */
export const US_STATE_AREA_CODES: Readonly<Record<string, readonly string[]>> = Object.freeze({
  FL: [
    '239', '305', '321', '324', '352', '386', '407', '448', '561', '645', '656', '689',
    '727', '728', '754', '772', '786', '813', '850', '863', '904', '941', '954',
  ],
  OK: ['405', '539', '572', '580', '918'],
  MD: ['227', '240', '301', '410', '443', '667'],
  WA: ['206', '253', '360', '425', '509', '564'],
  CT: ['203', '475', '860', '959'],
});

const STATE_BY_AREA_CODE: ReadonlyMap<string, string> = new Map(
  Object.entries(US_STATE_AREA_CODES).flatMap(([state, codes]) => codes.map((code) => [code, state] as const)),
);

const FRANCE: LegalLimit = {
  rule: 'France: commercial messages not on Sundays or public holidays, nor from 20:00',
  purposes: ['marketing', 'cart_recovery'],
  window: { start: 0, end: 20 * 60 },
  noSundays: true,
  noPublicHolidaysOf: 'FR',
};

/**
 * The TCPA covers the US territories too, which libphonenumber gives their
 * own region codes: Puerto Rico, the US Virgin Islands, Guam, American Samoa
 * and the Northern Mariana Islands.
 */
const US_TERRITORIES: ReadonlySet<string> = new Set(['PR', 'VI', 'GU', 'AS', 'MP']);

/** The limit the law puts on sending this purpose to this number, or null when none applies. */
export function legalLimit(country: string, e164: string, purpose: Purpose): LegalLimit | null {
  const limit = country === 'US' ? usLimit(e164) : US_TERRITORIES.has(country) ? US_FEDERAL : country === 'FR' ? FRANCE : null;
  return limit !== null && limit.purposes.includes(purpose) ? limit : null;
}

function usLimit(e164: string): LegalLimit {
  const areaCode = e164.startsWith('+1') ? e164.slice(2, 5) : '';
  const state = STATE_BY_AREA_CODE.get(areaCode);
  if (state === undefined) return US_FEDERAL;
  return { ...US_FEDERAL, rule: `US-${state} state law: 08:00–20:00 recipient time`, window: { start: 8 * 60, end: 20 * 60 } };
}

// ---- public holidays ----------------------------------------------------

const DAY_MS = 86_400_000;

/** Easter Sunday of a Gregorian year (the anonymous Gregorian, or Meeus/Jones/Butcher, algorithm). */
export function easterSunday(year: number): { month: number; day: number } {
  const a = year % 19;
  const b = Math.floor(year / 100);
  const c = year % 100;
  const d = Math.floor(b / 4);
  const e = b % 4;
  const f = Math.floor((b + 8) / 25);
  const g = Math.floor((b - f + 1) / 3);
  const h = (19 * a + b - d - g + 15) % 30;
  const i = Math.floor(c / 4);
  const k = c % 4;
  const l = (32 + 2 * e + 2 * i - h - k) % 7;
  const m = Math.floor((a + 11 * h + 22 * l) / 451);
  const n = h + l - 7 * m + 114;
  return { month: Math.floor(n / 31), day: (n % 31) + 1 };
}

/** Fixed-date French public holidays, as [month, day]. */
const FR_FIXED: readonly (readonly [number, number])[] = [
  [1, 1], // Jour de l'an
  [5, 1], // Fête du travail
  [5, 8], // Victoire 1945
  [7, 14], // Fête nationale
  [8, 15], // Assomption
  [11, 1], // Toussaint
  [11, 11], // Armistice
  [12, 25], // Noël
];

/** Days after Easter Sunday: Easter Monday, Ascension Thursday, Whit Monday. */
const FR_EASTER_OFFSETS: readonly number[] = [1, 39, 50];

/**
 * Whether a local calendar date is a public holiday. National holidays only:
 * Alsace-Moselle's Good Friday and Dec 26 and the overseas departments' days
 * are not included.
 */
export function isPublicHoliday(calendar: HolidayCalendar, year: number, month: number, day: number): boolean {
  switch (calendar) {
    case 'FR': {
      if (FR_FIXED.some(([m, d]) => m === month && d === day)) return true;
      const easter = easterSunday(year);
      const sinceEaster = (Date.UTC(year, month - 1, day) - Date.UTC(year, easter.month - 1, easter.day)) / DAY_MS;
      return FR_EASTER_OFFSETS.includes(sinceEaster);
    }
    default: {
      const never: never = calendar;
      throw new Error(`unknown holiday calendar ${String(never)}`);
    }
  }
}
