import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { breakerAllows, breakerRecord, CLOSED } from '../src/messaging/breaker.ts';
import { CARRIER_ERRORS, classifyCarrierError } from '../src/messaging/carrierErrors.ts';
import { parsePhone } from '../src/messaging/phone.ts';
import { DEFAULT_MULTIPLIERS, messageCost } from '../src/messaging/pricing.ts';
import { backoffMs, MAX_ATTEMPTS, retryDecision } from '../src/messaging/retry.ts';
import { countSegments } from '../src/messaging/segments.ts';
import { eventForCarrierStatus, MESSAGE_EVENTS, MESSAGE_STATUSES, type MessageEvent, TERMINAL, transition } from '../src/messaging/states.ts';

describe('segments', () => {
  it.each([
    ['', 'GSM-7', 1],
    ['a'.repeat(160), 'GSM-7', 1],
    ['a'.repeat(161), 'GSM-7', 2],
    ['a'.repeat(306), 'GSM-7', 2],
    ['a'.repeat(307), 'GSM-7', 3],
    // extension characters count twice: 80 × € = 160 septets, one segment; 81 = 162 → two
    ['€'.repeat(80), 'GSM-7', 1],
    ['€'.repeat(81), 'GSM-7', 2],
    ['[]{}~^\\|'.repeat(10), 'GSM-7', 1],
    ['[]{}~^\\|'.repeat(10) + 'a', 'GSM-7', 2],
    // any non-GSM character makes the whole message UCS-2
    ['ą'.padEnd(70, 'a'), 'UCS-2', 1],
    ['ą'.padEnd(71, 'a'), 'UCS-2', 2],
    ['ą'.padEnd(134, 'a'), 'UCS-2', 2],
    ['ą'.padEnd(135, 'a'), 'UCS-2', 3],
    // emoji are two UTF-16 code units: 35 emoji = 70 units, 36 = 72 → two segments
    ['😀'.repeat(35), 'UCS-2', 1],
    ['😀'.repeat(36), 'UCS-2', 2],
    ['Grüße aus Köln', 'GSM-7', 1],
    ['Ünïcödé ç', 'UCS-2', 1],
  ])('%j → %s, %i segment(s)', (body, encoding, segments) => {
    expect(countSegments(body)).toMatchObject({ encoding, segments });
  });

  it('property: GSM-7 text of n basic characters needs ceil(n/153) parts above 160', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1600 }), (n) => {
        const s = countSegments('x'.repeat(n));
        expect(s.segments).toBe(n <= 160 ? 1 : Math.ceil(n / 153));
      }),
    );
  });
});

describe('pricing', () => {
  it('uses the default country table and the worst case for others', () => {
    expect(messageCost(1, 'US')).toBe(1);
    expect(messageCost(3, 'GB')).toBe(6);
    expect(messageCost(2, 'DE')).toBe(6);
    expect(messageCost(1, 'JP')).toBe(3);
    expect(Object.keys(DEFAULT_MULTIPLIERS).length).toBe(23);
  });
  it('an organization price list overrides country by country', () => {
    const list = { multipliers: { US: 2, JP: 5 } };
    expect(messageCost(2, 'US', list)).toBe(4);
    expect(messageCost(1, 'JP', list)).toBe(5);
    expect(messageCost(1, 'GB', list)).toBe(2);
    expect(messageCost(1, 'BR', { multipliers: {}, fallback: 7 })).toBe(7);
  });
});

describe('phone numbers', () => {
  it('normalises to E.164 with country and type', () => {
    expect(parsePhone('+1 415 555 2671')).toMatchObject({ ok: true, e164: '+14155552671', country: 'US' });
    expect(parsePhone('+447400123456')).toMatchObject({ ok: true, country: 'GB', type: 'MOBILE' });
    expect(parsePhone('+19005550100')).toMatchObject({ ok: true, country: 'US', type: 'PREMIUM_RATE' });
    expect(parsePhone('+37060012345')).toMatchObject({ ok: true, country: 'LT' });
    expect(parsePhone('12345').ok).toBe(false);
    expect(parsePhone('not a number').ok).toBe(false);
    expect(parsePhone('+1 555 0100').ok).toBe(false);
  });
});

describe('the message state machine, exhaustively', () => {
  const events = Object.keys(MESSAGE_EVENTS) as MessageEvent[];
  it('every (status, event) pair is either a listed transition or refused', () => {
    for (const status of MESSAGE_STATUSES) {
      for (const event of events) {
        const t = transition(status, event);
        const rule = MESSAGE_EVENTS[event];
        expect(t.ok, `${status} --${event}`).toBe((rule.from as readonly string[]).includes(status));
        if (t.ok) expect(t.to).toBe(rule.to);
      }
    }
  });
  it('terminal states never move', () => {
    for (const status of TERMINAL) for (const event of events) expect(transition(status, event).ok).toBe(false);
  });
  it('callbacks only move forward: a late sent after delivered is ignored, nothing goes back to sending', () => {
    expect(transition('delivered', 'carrier_sent').ok).toBe(false);
    expect(transition('undelivered', 'carrier_delivered').ok).toBe(false);
    expect(transition('sent', 'carrier_sent').ok).toBe(false);
    for (const event of events) expect(MESSAGE_EVENTS[event].to === 'sending' ? event : 'claim').toBe('claim');
    expect(transition('sent', 'claim').ok).toBe(false);
  });
  it('only a queued message can be claimed, and a sent one can never be sent again', () => {
    for (const status of MESSAGE_STATUSES) expect(transition(status, 'claim').ok).toBe(status === 'queued');
    for (const s of ['sent', 'delivered', 'undelivered'] as const) {
      for (const event of events) {
        const t = transition(s, event);
        if (t.ok) expect(['delivered', 'undelivered']).toContain(t.to);
      }
    }
  });
  it('maps Twilio statuses', () => {
    expect(eventForCarrierStatus('queued')).toBe('carrier_sent');
    expect(eventForCarrierStatus('delivered')).toBe('carrier_delivered');
    expect(eventForCarrierStatus('undelivered')).toBe('carrier_undelivered');
    expect(eventForCarrierStatus('failed')).toBe('carrier_undelivered');
    expect(eventForCarrierStatus('partially_delivered')).toBe('carrier_delivered');
    expect(eventForCarrierStatus('canceled')).toBe('carrier_undelivered');
    expect(eventForCarrierStatus('receiving')).toBeUndefined();
    expect(eventForCarrierStatus('received')).toBeUndefined();
  });
});

describe('carrier error classification (one row per code)', () => {
  const expected: [number, 'transient' | 'permanent'][] = [
    [20429, 'transient'],
    [30001, 'transient'],
    [30003, 'transient'],
    [21211, 'permanent'],
    [21408, 'permanent'],
    [21610, 'permanent'],
    [21612, 'permanent'],
    [21614, 'permanent'],
    [30005, 'permanent'],
    [30006, 'permanent'],
    [30007, 'permanent'],
  ];
  it.each(expected)('%i is %s', (code, cls) => {
    expect(classifyCarrierError(code, 400).class).toBe(cls);
    expect(CARRIER_ERRORS[code]?.class).toBe(cls);
  });
  it('21610 also records an opt-out; unknown codes go by HTTP status', () => {
    expect(classifyCarrierError(21610, 400).optOut).toBe(true);
    expect(classifyCarrierError(99999, 503).class).toBe('transient');
    expect(classifyCarrierError(null, 500).class).toBe('transient');
    expect(classifyCarrierError(null, 429).class).toBe('transient');
    expect(classifyCarrierError(12345, 400).class).toBe('permanent');
  });
});

describe('retry policy', () => {
  it('30 s·2ⁿ ± 20 %, capped at 5 minutes, at most 5 attempts', () => {
    expect(backoffMs(1, 0.5)).toBe(30_000);
    expect(backoffMs(2, 0.5)).toBe(60_000);
    expect(backoffMs(3, 0.5)).toBe(120_000);
    expect(backoffMs(4, 0.5)).toBe(240_000);
    expect(backoffMs(5, 0.5)).toBe(300_000);
    expect(backoffMs(1, 0)).toBe(24_000);
    expect(backoffMs(1, 0.999999)).toBe(36_000);
    expect(retryDecision(MAX_ATTEMPTS, 0.5)).toEqual({ retry: false, reason: 'attempts_exhausted' });
    // on a fast clock (SEND_RETRY_BASE_MS) the shape is the same, the cap 10× the base
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffMs(n, 0.5, 400))).toEqual([400, 800, 1600, 3200, 4000, 4000]);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.double({ min: 0, max: 0.9999, noNaN: true }), (n, r) => {
        const d = backoffMs(n, r);
        const base = Math.min(30_000 * 2 ** (n - 1), 300_000);
        expect(d).toBeGreaterThanOrEqual(Math.floor(base * 0.8));
        expect(d).toBeLessThanOrEqual(300_000);
      }),
    );
  });
});

describe('circuit breaker', () => {
  it('opens after repeated transient failures, half-opens to probe, closes on success', () => {
    let s = CLOSED;
    for (let i = 0; i < 9; i++) s = breakerRecord(s, 'transient_failure', 0);
    expect(breakerAllows(s, 0).allow).toBe(true);
    s = breakerRecord(s, 'transient_failure', 1000);
    expect(s.state).toBe('open');
    expect(breakerAllows(s, 2000)).toMatchObject({ allow: false, retryAt: 16_000 });
    const probe = breakerAllows(s, 16_000);
    expect(probe.allow).toBe(true);
    expect(breakerAllows(probe.next, 16_001).allow).toBe(false); // only one probe at a time
    expect(breakerRecord(probe.next, 'transient_failure', 16_500).state).toBe('open');
    expect(breakerRecord(probe.next, 'success', 16_500)).toEqual(CLOSED);
  });
});

describe('reconciliation by number and body: matchBySiblings', () => {
  it.each([
    // untaken copies, unresolved siblings, one in a worker's hands → take, ambiguous
    [0, 0, false, false, false],
    [1, 0, false, true, false],
    [1, 1, false, false, true],
    [1, 1, true, false, true],
    [2, 1, false, true, false],
    [2, 1, true, false, true],
    [3, 2, false, true, false],
    [2, 2, false, false, true],
    [0, 3, true, false, false],
  ])('%i copies, %i siblings (live %s): take %s, ambiguous %s', async (untaken, count, live, take, ambiguous) => {
    const { matchBySiblings } = await import('../src/messaging/settle.ts');
    expect(matchBySiblings(untaken, { count, live })).toEqual({ take, ambiguous });
  });
});
