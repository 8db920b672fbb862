import fc from 'fast-check';
import { DateTime, IANAZone } from 'luxon';
import { describe, expect, it } from 'vitest';
import { easterSunday, isPublicHoliday, legalLimit } from '../src/sendrules/jurisdictions.ts';
import {
  DEFAULT_WINDOWS,
  formatWindow,
  isAllowedAt,
  nextAllowedInstant,
  parseWindow,
  type Purpose,
  type SendPolicy,
  sendPolicy,
  type Window,
} from '../src/sendrules/quietHours.ts';
import { COUNTRY_MAIN_ZONE, primaryZone, recipientZones, zonesForNumber } from '../src/sendrules/timezones.ts';

const MINUTE = 60_000;
const DAY = 86_400_000;
const w = (start: string, end: string): Window => parseWindow({ start, end }) as Window;
const policy = (window: Window | null): SendPolicy => ({ window, noSundays: false, noPublicHolidaysOf: null });
/** The answer as local ISO time with its offset, so an expectation shows both the wall clock and the instant. */
const next = (atIso: string, zones: string[], p: SendPolicy): string =>
  DateTime.fromJSDate(nextAllowedInstant(new Date(atIso), zones, p), { zone: zones[0] }).toISO() as string;

describe('windows', () => {
  it('parses HH:MM, with 24:00 as an end only', () => {
    expect(parseWindow({ start: '10:00', end: '19:00' })).toEqual({ start: 600, end: 1140 });
    expect(parseWindow({ start: '00:00', end: '24:00' })).toEqual({ start: 0, end: 1440 });
    for (const bad of ['24:00-24:00', '9:00-10:00', '10:60-11:00', '10:00-10:00', '19:00-10:00', '10:00-24:01', '10:00-25:00']) {
      const [start, end] = bad.split('-') as [string, string];
      expect(parseWindow({ start, end }), bad).toHaveProperty('error');
    }
  });
  it('property: formatWindow and parseWindow round-trip', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1439 }), fc.integer({ min: 1, max: 1440 }), (a, b) => {
        fc.pre(a < b);
        expect(parseWindow(formatWindow({ start: a, end: b }))).toEqual({ start: a, end: b });
      }),
    );
  });
});

describe('time zones of a recipient', () => {
  it('finds zones by longest prefix', () => {
    expect(zonesForNumber('+14155552671')).toEqual(['America/Los_Angeles']);
    expect(zonesForNumber('+12125550100')).toEqual(['America/New_York']);
    expect(zonesForNumber('+9779841234567')).toEqual([expect.stringMatching(/^Asia\/Kat(h)?mandu$/)]);
    expect(zonesForNumber('+61255053123')).toEqual(['Australia/Lord_Howe']);
    expect(zonesForNumber('+351912345678').sort()).toEqual(['Atlantic/Azores', 'Europe/Lisbon']);
    expect(zonesForNumber('not a number')).toEqual([]);
  });
  it('prefers the contact zone, then the number, then the country, then UTC', () => {
    const r = (contactZone: string | null, e164: string, country: string) => recipientZones({ contactZone, e164, country });
    expect(r('Europe/Paris', '+14155552671', 'US')).toEqual(['Europe/Paris']);
    expect(r('Not/AZone', '+14155552671', 'US')).toEqual(['America/Los_Angeles']);
    // ambiguous: every candidate zone, the country's main zone first
    expect(r(null, '+351912345678', 'PT')).toEqual(['Europe/Lisbon', 'Atlantic/Azores']);
    expect(r(null, '+522001234567', 'MX')).toEqual(['America/Mexico_City', 'America/Tijuana']);
    expect(r(null, '+999', 'DE')).toEqual(['Europe/Berlin']);
    expect(r(null, '+999', 'ZZ')).toEqual(['UTC']);
  });
  it('picks a primary zone', () => {
    expect(primaryZone(['Atlantic/Azores', 'Europe/Lisbon'], 'PT')).toBe('Europe/Lisbon');
    expect(primaryZone(['Atlantic/Canary'], 'ES')).toBe('Atlantic/Canary');
    expect(primaryZone(['Asia/Almaty', 'Asia/Aqtobe'], 'KZ')).toBe('Asia/Almaty');
  });
  it('has a valid main zone for every listed country, the EU and EEA included', () => {
    const eea = 'AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO'.split(' ');
    for (const c of [...eea, 'GB', 'CH', 'NZ', 'IN', 'JP', 'NP', 'US', 'CA', 'MX', 'BR', 'AU', 'RU']) {
      expect(IANAZone.isValidZone(COUNTRY_MAIN_ZONE[c] ?? ''), c).toBe(true);
    }
    expect(COUNTRY_MAIN_ZONE).toMatchObject({ US: 'America/New_York', NP: 'Asia/Kathmandu', RU: 'Europe/Moscow' });
  });
});

describe('the wall clock across offset changes', () => {
  it('is read right on both sides of a change, asked every half minute (the offset is remembered per minute)', () => {
    const p: SendPolicy = { window: { start: 60, end: 120 }, noSundays: false, noPublicHolidaysOf: null };
    // New York springs forward at 2026-03-08 07:00Z and falls back at 2026-11-01 06:00Z
    for (const change of [Date.parse('2026-03-08T07:00:00Z'), Date.parse('2026-11-01T06:00:00Z')]) {
      for (let t = change - 150 * MINUTE; t <= change + 150 * MINUTE; t += MINUTE / 2) {
        const expected = DateTime.fromMillis(t, { zone: 'America/New_York' }).hour === 1;
        expect(isAllowedAt(new Date(t), 'America/New_York', p)).toBe(expected);
      }
    }
  });
});

describe('the exact earliest instant', () => {
  const marketing = policy(w('10:00', '19:00'));
  it('defers to the window start to the millisecond, and keeps an allowed instant unchanged', () => {
    expect(next('2026-06-16T19:30:00.000+02:00', ['Europe/Berlin'], marketing)).toBe('2026-06-17T10:00:00.000+02:00');
    expect(next('2026-06-16T09:59:59.500+02:00', ['Europe/Berlin'], marketing)).toBe('2026-06-16T10:00:00.000+02:00');
    expect(next('2026-06-16T18:59:59.999+02:00', ['Europe/Berlin'], marketing)).toBe('2026-06-16T18:59:59.999+02:00');
    expect(next('2026-06-16T19:00:00.000+02:00', ['Europe/Berlin'], marketing)).toBe('2026-06-17T10:00:00.000+02:00');
    const at = new Date('2026-06-16T12:34:56.789+02:00');
    expect(nextAllowedInstant(at, ['Europe/Berlin'], marketing).getTime()).toBe(at.getTime());
    expect(next('2026-06-15T19:30:00.000+05:45', ['Asia/Kathmandu'], marketing)).toBe('2026-06-16T10:00:00.000+05:45');
  });

  it('America/New_York spring forward (2026-03-08): a window opening in the gap opens at 03:00', () => {
    const ny = ['America/New_York'];
    // Luxon moves the non-existent 02:30 to 03:30; the first instant inside 02:30–19:00 is 03:00.
    expect(DateTime.fromObject({ year: 2026, month: 3, day: 8, hour: 2, minute: 30 }, { zone: ny[0] }).toISO()).toBe(
      '2026-03-08T03:30:00.000-04:00',
    );
    expect(next('2026-03-08T00:30:00.000-05:00', ny, policy(w('02:30', '19:00')))).toBe('2026-03-08T03:00:00.000-04:00');
    // A window wholly inside the gap does not exist that day.
    expect(next('2026-03-08T00:30:00.000-05:00', ny, policy(w('02:00', '02:45')))).toBe('2026-03-09T02:00:00.000-04:00');
    expect(next('2026-03-07T19:30:00.000-05:00', ny, marketing)).toBe('2026-03-08T10:00:00.000-04:00');
  });

  it('America/New_York fall back (2026-11-01): the repeated hour counts twice', () => {
    const ny = ['America/New_York'];
    expect(next('2026-11-01T00:10:00.000-04:00', ny, policy(w('01:30', '19:00')))).toBe('2026-11-01T01:30:00.000-04:00');
    // 01:45 EDT is outside 00:00–01:30, but the clock then goes back to 01:00 EST, inside it.
    expect(next('2026-11-01T01:45:00.000-04:00', ny, policy(w('00:00', '01:30')))).toBe('2026-11-01T01:00:00.000-05:00');
    expect(next('2026-10-31T19:30:00.000-04:00', ny, marketing)).toBe('2026-11-01T10:00:00.000-05:00');
  });

  it('Europe/Berlin 2026-03-29 and 2026-10-25', () => {
    const be = ['Europe/Berlin'];
    expect(next('2026-03-29T01:00:00.000+01:00', be, policy(w('02:15', '19:00')))).toBe('2026-03-29T03:00:00.000+02:00');
    expect(next('2026-10-25T02:40:00.000+02:00', be, policy(w('02:00', '02:30')))).toBe('2026-10-25T02:00:00.000+01:00');
    expect(next('2026-10-24T20:00:00.000+02:00', be, marketing)).toBe('2026-10-25T10:00:00.000+01:00');
  });

  it('Australia/Lord_Howe moves its clock by 30 minutes', () => {
    const lh = ['Australia/Lord_Howe'];
    expect(next('2026-10-04T01:00:00.000+10:30', lh, policy(w('02:10', '19:00')))).toBe('2026-10-04T02:30:00.000+11:00');
    expect(next('2026-04-05T01:50:00.000+11:00', lh, policy(w('00:00', '01:45')))).toBe('2026-04-05T01:30:00.000+10:30');
  });

  it('an ambiguous number must be inside the window in every zone it may be in', () => {
    const pt = recipientZones({ contactZone: null, e164: '+351912345678', country: 'PT' });
    // Lisbon opens at 09:00Z, the Azores (UTC+0 in summer) at 10:00Z.
    expect(next('2026-06-15T09:30:00.000+01:00', pt, marketing)).toBe('2026-06-15T11:00:00.000+01:00');
    const mx = recipientZones({ contactZone: null, e164: '+522001234567', country: 'MX' });
    // Mexico City is UTC−6 all year; Tijuana UTC−7 in summer, UTC−8 in winter: it opens last and closes last.
    expect(next('2026-06-15T09:00:00.000-06:00', mx, marketing)).toBe('2026-06-15T11:00:00.000-06:00');
    expect(next('2026-06-15T18:59:59.999-06:00', mx, marketing)).toBe('2026-06-15T18:59:59.999-06:00');
    expect(next('2026-06-15T19:00:00.000-06:00', mx, marketing)).toBe('2026-06-16T11:00:00.000-06:00');
    expect(next('2026-01-15T09:00:00.000-06:00', mx, marketing)).toBe('2026-01-15T12:00:00.000-06:00');
  });

  it('falls back to the first zone when the zones never share a window', () => {
    const zones = ['Europe/Berlin', 'Pacific/Chatham'];
    expect(next('2026-06-15T08:00:00.000+02:00', zones, policy(w('10:00', '11:00')))).toBe('2026-06-15T10:00:00.000+02:00');
  });
});

describe('legal limits', () => {
  const [FL, CA, CT, WA, FR] = ['+13055550123', '+14155552671', '+12035550100', '+12065550100', '+33612345678'];
  const win = (purpose: Purpose, country: string, e164: string, ws?: Window) =>
    sendPolicy({ purpose, country, e164, workspaceWindow: ws }).window;
  const at = (iso: string, e164: string, country: string, purpose: Purpose, ws?: Window) =>
    next(iso, recipientZones({ contactZone: null, e164, country }), sendPolicy({ purpose, country, e164, workspaceWindow: ws }));

  it('narrows the workspace window to the US federal and state windows', () => {
    const ws = w('09:00', '22:00');
    expect(win('marketing', 'US', FL, ws)).toEqual(w('09:00', '20:00'));
    expect(win('marketing', 'US', CA, ws)).toEqual(w('09:00', '21:00'));
    expect(win('appointment', 'US', CT)).toEqual(w('08:00', '20:00'));
    expect(win('cart_recovery', 'US', WA)).toEqual(w('09:00', '20:00'));
    expect(at('2026-06-15T20:30:00.000-04:00', FL, 'US', 'marketing', ws)).toBe('2026-06-16T09:00:00.000-04:00');
    expect(at('2026-06-15T20:30:00.000-07:00', CA, 'US', 'marketing', ws)).toBe('2026-06-15T20:30:00.000-07:00');
  });
  it('the US territories get the TCPA window too (Puerto Rico: a workspace window of 06:00–23:00 becomes 08:00–21:00)', () => {
    const ws = w('06:00', '23:00');
    for (const [country, e164] of [['PR', '+17875551234'], ['VI', '+13405551234'], ['GU', '+16715551234']] as const) {
      expect(win('marketing', country, e164, ws)).toEqual(w('08:00', '21:00'));
    }
    expect(at('2026-01-14T06:30:00.000-04:00', '+17875551234', 'PR', 'marketing', ws)).toBe('2026-01-14T08:00:00.000-04:00');
  });
  it('a US number known only by its calling code (+1: every zone from Guam to Puerto Rico) is inside its window from New York to Honolulu', () => {
    const e164 = '+15005551234';
    const zones = recipientZones({ contactZone: null, e164, country: 'US' });
    expect(zones.length).toBeGreaterThan(10);
    const p = sendPolicy({ purpose: 'marketing', country: 'US', e164 });
    // 10:00 in New York is 07:00 in Los Angeles and 05:00 in Honolulu
    const chosen = nextAllowedInstant(new Date('2026-01-14T10:00:00.000-05:00'), zones, p);
    for (const zone of ['America/New_York', 'America/Chicago', 'America/Denver', 'America/Los_Angeles', 'America/Anchorage', 'Pacific/Honolulu']) {
      expect(isAllowedAt(chosen, zone, p), `${zone} at ${chosen.toISOString()}`).toBe(true);
    }
  });
  it('falls back to the legal window when the workspace window lies outside it', () => {
    expect(win('marketing', 'US', CA, w('21:30', '23:00'))).toEqual(w('08:00', '21:00'));
  });
  it('France: no Sundays, no public holidays, nothing from 20:00', () => {
    expect(sendPolicy({ purpose: 'marketing', country: 'FR', e164: FR })).toEqual({
      window: w('10:00', '19:00'),
      noSundays: true,
      noPublicHolidaysOf: 'FR',
    });
    // Sunday 12 July → Monday 13 July
    expect(at('2026-07-12T11:00:00.000+02:00', FR, 'FR', 'marketing')).toBe('2026-07-13T10:00:00.000+02:00');
    // Monday 13 July 20:15 → Tuesday 14 July is a holiday → Wednesday 15 July
    expect(at('2026-07-13T20:15:00.000+02:00', FR, 'FR', 'marketing')).toBe('2026-07-15T10:00:00.000+02:00');
    expect(at('2026-07-14T12:00:00.000+02:00', FR, 'FR', 'cart_recovery')).toBe('2026-07-15T09:00:00.000+02:00');
    // a weekday at 20:15 → next day at the window start; a later workspace window still stops at 20:00
    expect(at('2026-06-16T20:15:00.000+02:00', FR, 'FR', 'marketing')).toBe('2026-06-17T10:00:00.000+02:00');
    const late = w('09:00', '22:00');
    expect(at('2026-06-16T19:30:00.000+02:00', FR, 'FR', 'marketing', late)).toBe('2026-06-16T19:30:00.000+02:00');
    expect(at('2026-06-16T20:00:00.000+02:00', FR, 'FR', 'marketing', late)).toBe('2026-06-17T09:00:00.000+02:00');
    // appointments are not commercial solicitation: Sundays are fine
    expect(at('2026-07-12T11:00:00.000+02:00', FR, 'FR', 'appointment')).toBe('2026-07-12T11:00:00.000+02:00');
  });
  it('transactional messages are never deferred, unless the workspace sets a window for them', () => {
    expect(at('2026-07-14T23:30:00.000+02:00', FR, 'FR', 'transactional')).toBe('2026-07-14T23:30:00.000+02:00');
    expect(at('2026-06-15T03:00:00.000-04:00', FL, 'US', 'transactional')).toBe('2026-06-15T03:00:00.000-04:00');
    expect(legalLimit('US', FL, 'transactional')).toBeNull();
    expect(DEFAULT_WINDOWS.transactional).toBeNull();
    expect(win('transactional', 'US', FL, w('07:00', '23:00'))).toEqual(w('07:00', '23:00'));
  });
  it('computes Easter and the French public holidays', () => {
    const easter = [2024, 2025, 2026, 2027].map((y) => easterSunday(y)).map(({ month, day }) => `${month}-${day}`);
    expect(easter).toEqual(['3-31', '4-20', '4-5', '3-28']);
    const holidays2026: string[] = [];
    for (let t = Date.UTC(2026, 0, 1); t < Date.UTC(2027, 0, 1); t += DAY) {
      const d = new Date(t);
      const holiday = isPublicHoliday('FR', d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate());
      if (holiday) holidays2026.push(d.toISOString().slice(5, 10));
    }
    expect(holidays2026.join(' ')).toBe('01-01 04-06 05-01 05-08 05-14 05-25 07-14 08-15 11-01 11-11 12-25');
  });
});

describe('property: nextAllowedInstant is the exact earliest allowed instant', () => {
  const ZONES = [
    ...['America/New_York', 'Europe/Berlin', 'Asia/Kathmandu', 'Australia/Lord_Howe'],
    ...['Pacific/Chatham', 'America/St_Johns', 'UTC', 'Europe/Paris'],
  ];
  const FROM = Date.UTC(2020, 0, 1);
  const TO = Date.UTC(2036, 0, 1) - 1;

  /** Days on which each zone's offset changes (found with Luxon alone), to aim instants at DST changes. */
  const changeDays = new Map(
    ZONES.map((zone) => {
      const days: number[] = [];
      for (let t = FROM; t < TO; t += DAY) {
        if (DateTime.fromMillis(t, { zone }).offset !== DateTime.fromMillis(t + DAY, { zone }).offset) days.push(t);
      }
      return [zone, days];
    }),
  );

  /** An instant from a day before to two days after one of the zone's offset changes (any instant for zones without DST). */
  const nearChange = (zone: string): fc.Arbitrary<number> => {
    const days = changeDays.get(zone) ?? [];
    if (days.length === 0) return fc.integer({ min: FROM, max: TO });
    return fc.tuple(fc.constantFrom(...days), fc.integer({ min: -DAY, max: 2 * DAY })).map(([d, dt]) => d + dt);
  };

  const windowArb: fc.Arbitrary<Window> = fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: 1440 }), fc.integer({ min: 0, max: 1440 }))
      .filter(([a, b]) => a !== b)
      .map(([a, b]) => ({ start: Math.min(a, b), end: Math.max(a, b) })),
    // windows that open, close or lie inside DST gaps and overlaps
    fc.constantFrom(
      ...'02:00-03:00 02:30-19:00 00:00-01:30 01:00-02:00 02:15-02:45 10:00-19:00 23:00-24:00'
        .split(' ')
        .map((t) => w(t.slice(0, 5), t.slice(6))),
    ),
  );
  const policyArb: fc.Arbitrary<SendPolicy> = fc.record({
    window: fc.option(windowArb, { nil: null }),
    noSundays: fc.boolean(),
    noPublicHolidaysOf: fc.constantFrom(null, 'FR' as const),
  });
  const caseArb = fc.uniqueArray(fc.constantFrom(...ZONES), { minLength: 1, maxLength: 3 }).chain((zones) =>
    fc.record({
      zones: fc.constant(zones),
      at: fc.oneof(
        fc.integer({ min: FROM, max: TO }),
        fc.integer({ min: FROM, max: TO }).map((t) => t - (t % MINUTE)),
        nearChange(zones[0] as string),
      ),
      policy: policyArb,
    }),
  );

  /**
   * A second, faster reading of the rule for the exhaustive scans below:
   * Luxon's offset, taken once per 15 minutes (and only where it is the same
   * at both ends of the 15 minutes), and the wall clock read off with UTC
   * arithmetic. A property below checks that it agrees with isAllowedAt.
   */
  function oracle(p: SendPolicy): (t: number, zone: string) => boolean {
    const BLOCK = 15 * MINUTE;
    const offsets = new Map(ZONES.map((z) => [z, new Map<number, number>()]));
    const offsetAt = (t: number, zone: string): number => {
      const block = t - (t % BLOCK);
      const cache = offsets.get(zone) as Map<number, number>;
      let o = cache.get(block);
      if (o === undefined) {
        const first = DateTime.fromMillis(block, { zone }).offset;
        o = first === DateTime.fromMillis(block + BLOCK - 1, { zone }).offset ? first : NaN;
        cache.set(block, o);
      }
      return Number.isNaN(o) ? DateTime.fromMillis(t, { zone }).offset : o;
    };
    return (t, zone) => {
      const localMs = t + offsetAt(t, zone) * MINUTE;
      const local = new Date(localMs);
      if (p.noSundays && local.getUTCDay() === 0) return false;
      const [y, m, d] = [local.getUTCFullYear(), local.getUTCMonth() + 1, local.getUTCDate()];
      if (p.noPublicHolidaysOf !== null && isPublicHoliday(p.noPublicHolidaysOf, y, m, d)) return false;
      const msOfDay = localMs - Math.floor(localMs / DAY) * DAY;
      return p.window === null || (msOfDay >= p.window.start * MINUTE && msOfDay < p.window.end * MINUTE);
    };
  }

  /**
   * Every zone here has whole-minute offsets and changes them on whole
   * minutes, and windows are whole minutes, so whether an instant is allowed
   * can only change on a whole minute: checking `from` and every whole minute
   * after it is exhaustive.
   */
  function firstAllowedOnGrid(from: number, to: number, allowed: (t: number) => boolean): number | null {
    if (allowed(from)) return from;
    for (let t = from - (from % MINUTE) + MINUTE; t < to; t += MINUTE) if (allowed(t)) return t;
    return null;
  }

  it('the oracle agrees with isAllowedAt', () => {
    fc.assert(
      fc.property(caseArb, fc.integer({ min: 0, max: 3 * DAY }), ({ zones, at, policy: p }, dt) => {
        const allowed = oracle(p);
        for (const z of zones) expect(allowed(at + dt, z)).toBe(isAllowedAt(new Date(at + dt), z, p));
      }),
      { numRuns: 1000 },
    );
  });

  it('never earlier, allowed, and nothing allowed before it', () => {
    fc.assert(
      fc.property(caseArb, ({ zones, at, policy: p }) => {
        const answer = nextAllowedInstant(new Date(at), zones, p).getTime();
        const allowed = oracle(p);
        const inAll = (t: number) => zones.every((z) => allowed(t, z));
        expect(answer).toBeGreaterThanOrEqual(at);
        let scope = zones;
        if (!zones.every((z) => isAllowedAt(new Date(answer), z, p))) {
          // the fallback: only when no instant within 14 days suits every zone; then the
          // earliest instant of the most likely zone and the others kept with it
          expect(firstAllowedOnGrid(at, at + 14 * DAY, inAll)).toBeNull();
          // the zones that must be kept, found independently: the first, then each other one,
          // nearest clock first, that still shares an instant within 14 days with those kept
          const offsetAt = (z: string) => DateTime.fromMillis(at, { zone: z }).offset;
          const first = zones[0] as string;
          const kept = [first];
          for (const z of zones.slice(1).sort((x, y) => Math.abs(offsetAt(x) - offsetAt(first)) - Math.abs(offsetAt(y) - offsetAt(first)))) {
            if (firstAllowedOnGrid(at, at + 14 * DAY, (t) => [...kept, z].every((k) => allowed(t, k))) !== null) kept.push(z);
          }
          scope = zones.filter((z) => isAllowedAt(new Date(answer), z, p));
          for (const z of kept) expect(scope, `kept ${kept.join(', ')}`).toContain(z);
          scope = kept;
        }
        const isAllowed = (t: number) => scope.every((z) => isAllowedAt(new Date(t), z, p));
        expect(isAllowed(answer)).toBe(true);
        if (answer === at) return;
        expect(isAllowed(answer - 1)).toBe(false);
        for (let k = 1; k <= 7; k++) expect(isAllowed(at + Math.floor(((answer - at) * k) / 8))).toBe(false);
        expect(firstAllowedOnGrid(at, answer, (t) => scope.every((z) => allowed(t, z)))).toBeNull();
      }),
      { numRuns: 400 },
    );
  });

  it('no window and no day rules: always at once', () => {
    fc.assert(
      fc.property(fc.integer({ min: FROM, max: TO }), fc.constantFrom(...ZONES), (at, zone) => {
        expect(nextAllowedInstant(new Date(at), [zone], policy(null)).getTime()).toBe(at);
      }),
    );
  });
});
