import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CONSENT_PURPOSES,
  type ConsentAction,
  type ConsentEvent,
  type ConsentPurpose,
  type ConsentState,
  consentAllows,
  deriveConsent,
  deriveConsentClosedForm,
  EXPRESS_CONSENT,
  optInPlan,
  stateOf,
} from '../src/consent/consent.ts';
import { classifyInbound, HELP_KEYWORDS, type KeywordKind, OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS } from '../src/consent/keywords.ts';

describe('inbound keywords (one row per body)', () => {
  const rows: [string, KeywordKind | null][] = [
    // the opt-out table itself
    ['STOP', 'opt_out'],
    ['STOPALL', 'opt_out'],
    ['UNSUBSCRIBE', 'opt_out'],
    ['CANCEL', 'opt_out'],
    ['END', 'opt_out'],
    ['QUIT', 'opt_out'],
    ['REVOKE', 'opt_out'],
    ['OPTOUT', 'opt_out'],
    // case, whitespace and punctuation
    ['stop', 'opt_out'],
    ['  Stop.  ', 'opt_out'],
    ['STOP!!', 'opt_out'],
    ["'stop'", 'opt_out'],
    ['"Stop"', 'opt_out'],
    ['¡stop!', 'opt_out'],
    ['\nquit\t', 'opt_out'],
    // split spellings
    ['STOP ALL', 'opt_out'],
    ['stop all', 'opt_out'],
    ['OPT OUT', 'opt_out'],
    ['opt-out', 'opt_out'],
    ['un-subscribe', 'opt_out'],
    ['S T O P', 'opt_out'],
    // filler words around the keyword
    ['stop please', 'opt_out'],
    ['please stop', 'opt_out'],
    ['STOP NOW', 'opt_out'],
    ['stop it', 'opt_out'],
    ['stop thanks', 'opt_out'],
    ['Stop, thank you', 'opt_out'],
    ['unsubscribe me', 'opt_out'],
    ['stop texting me', 'opt_out'],
    ['Please stop texting me now', 'opt_out'],
    ['stop stop stop', 'opt_out'],
    // Unicode: full-width, accents, emoji
    ['ＳＴＯＰ', 'opt_out'],
    ['Stóp', 'opt_out'],
    ['STOP 🙏', 'opt_out'],
    ['🛑 stop 🛑', 'opt_out'],
    // mixed kinds: opt-out wins, then help, then opt-in
    ['yes stop', 'opt_out'],
    ['help stop', 'opt_out'],
    ['yes help', 'help'],
    // opt-in
    ['START', 'opt_in'],
    ['UNSTOP', 'opt_in'],
    ['un-stop', 'opt_in'],
    ['YES', 'opt_in'],
    ['yes!', 'opt_in'],
    ['Yes please', 'opt_in'],
    ['start again', 'opt_in'],
    ['Yes 👍', 'opt_in'],
    // help
    ['HELP', 'help'],
    ['help?', 'help'],
    ['INFO', 'help'],
    ['help me', 'help'],
    ['info please', 'help'],
    // ordinary replies that merely contain a keyword
    ['Can I cancel my appointment tomorrow?', null],
    ["I'll be there at the end of the day", null],
    ["Don't stop", null],
    ['Don’t stop', null],
    ['do not stop', null],
    ['yes but can we move it to 5pm', null],
    ['help me find my order number', null],
    ['the end', null],
    ['stop by the shop at 3', null],
    ['cancel 2', null],
    ['opt in', null],
    ['stopwatch', null],
    ['stop please stop texting me now thanks', null], // five filler words: free text
    // nothing at all
    ['', null],
    ['   ', null],
    ['!!!', null],
    ['🙏', null],
    ['thanks', null],
  ];
  it.each(rows)('%j → %s', (body, kind) => {
    expect(classifyInbound(body)?.kind ?? null).toBe(kind);
  });

  it('reports the canonical keyword from the table', () => {
    expect(classifyInbound('opt-out please')).toEqual({ kind: 'opt_out', keyword: 'OPTOUT' });
    expect(classifyInbound('stop all')).toEqual({ kind: 'opt_out', keyword: 'STOPALL' });
    expect(classifyInbound('un stop')).toEqual({ kind: 'opt_in', keyword: 'UNSTOP' });
    expect(classifyInbound('info')).toEqual({ kind: 'help', keyword: 'INFO' });
  });

  it('property: every table keyword, in any case and punctuation, classifies as its own kind', () => {
    const table = [
      ...OPT_OUT_KEYWORDS.map((k) => [k, 'opt_out'] as const),
      ...OPT_IN_KEYWORDS.map((k) => [k, 'opt_in'] as const),
      ...HELP_KEYWORDS.map((k) => [k, 'help'] as const),
    ];
    fc.assert(
      fc.property(fc.constantFrom(...table), fc.boolean(), fc.constantFrom('', '.', '!', '!!', ' ', '?'), ([k, kind], lower, tail) => {
        const body = (lower ? k.toLowerCase() : k) + tail;
        expect(classifyInbound(body)).toEqual({ kind, keyword: k });
      }),
    );
  });
});

const ACTIONS: readonly ConsentAction[] = ['granted', 'revoked', 'requested'];
const at = new Date('2025-01-01T00:00:00Z');
function log(...steps: [ConsentPurpose, ConsentAction][]): ConsentEvent[] {
  return steps.map(([purpose, action], i) => ({ seq: i + 1, purpose, action, at }));
}

/** Random logs with unique seqs, delivered in a random order (the fold must sort). */
const eventLogs = fc
  .array(fc.tuple(fc.constantFrom(...CONSENT_PURPOSES), fc.constantFrom(...ACTIONS), fc.integer({ min: 1, max: 3 })), { maxLength: 30 })
  .chain((steps) => {
    let seq = 0;
    const events = steps.map(([purpose, action, gap]): ConsentEvent => ({ seq: (seq += gap), purpose, action, at }));
    return fc.shuffledSubarray(events, { minLength: events.length, maxLength: events.length });
  });

describe('consent derivation', () => {
  it('folds the log per purpose', () => {
    expect(deriveConsent([])).toEqual({ marketing: 'none', transactional: 'none', appointment: 'none', cart_recovery: 'none' });
    const events = log(['marketing', 'requested'], ['appointment', 'granted'], ['marketing', 'granted'], ['appointment', 'revoked'], ['cart_recovery', 'requested']);
    expect(deriveConsent(events)).toEqual({ marketing: 'granted', transactional: 'none', appointment: 'revoked', cart_recovery: 'pending' });
    expect(stateOf(events, 'appointment')).toBe('revoked');
    expect(stateOf(events, 'transactional')).toBe('none');
  });
  it('a new double opt-in request does not downgrade a grant, but does follow a revocation', () => {
    expect(stateOf(log(['marketing', 'granted'], ['marketing', 'requested']), 'marketing')).toBe('granted');
    expect(stateOf(log(['marketing', 'revoked'], ['marketing', 'requested']), 'marketing')).toBe('pending');
    expect(stateOf(log(['marketing', 'requested'], ['marketing', 'revoked']), 'marketing')).toBe('revoked');
  });
  it('orders by seq, not by array position', () => {
    const [a, b] = log(['marketing', 'granted'], ['marketing', 'revoked']) as [ConsentEvent, ConsentEvent];
    expect(stateOf([b, a], 'marketing')).toBe('revoked');
  });
  it('property: the fold and the closed form (the SQL version) agree', () => {
    fc.assert(
      fc.property(eventLogs, (events) => {
        expect(deriveConsentClosedForm(events)).toEqual(deriveConsent(events));
      }),
      { numRuns: 1000 },
    );
  });
  it('property: when a purpose’s last event is a revocation, it is revoked', () => {
    fc.assert(
      fc.property(eventLogs, fc.constantFrom(...CONSENT_PURPOSES), (events, purpose) => {
        const last = Math.max(0, ...events.map((e) => e.seq));
        const withStop = [...events, { seq: last + 1, purpose, action: 'revoked' as const, at }];
        expect(stateOf(withStop, purpose)).toBe('revoked');
        expect(deriveConsentClosedForm(withStop)[purpose]).toBe('revoked');
      }),
    );
  });
});

describe('consentAllows (one row per purpose and state)', () => {
  const rows: [ConsentPurpose, ConsentState, boolean][] = [
    ['marketing', 'granted', true],
    ['marketing', 'pending', false],
    ['marketing', 'revoked', false],
    ['marketing', 'none', false],
    ['cart_recovery', 'granted', true],
    ['cart_recovery', 'pending', false],
    ['cart_recovery', 'revoked', false],
    ['cart_recovery', 'none', false],
    ['transactional', 'granted', true],
    ['transactional', 'pending', true],
    ['transactional', 'revoked', false],
    ['transactional', 'none', true],
    ['appointment', 'granted', true],
    ['appointment', 'pending', true],
    ['appointment', 'revoked', false],
    ['appointment', 'none', true],
  ];
  it.each(rows)('%s when %s → %s', (purpose, state, allowed) => {
    expect(consentAllows(purpose, state)).toBe(allowed);
  });
  it('express consent is exactly marketing and cart recovery', () => {
    expect([...EXPRESS_CONSENT].sort()).toEqual(['cart_recovery', 'marketing']);
  });
});

describe('optInPlan (what START / UNSTOP / YES grants)', () => {
  it('STOP then START restores previously granted marketing', () => {
    const events = log(['marketing', 'granted'], ['marketing', 'revoked']);
    expect(optInPlan(events)).toEqual(['marketing']);
  });
  it('START never grants marketing that was never granted or requested', () => {
    expect(optInPlan([])).toEqual([]);
    expect(optInPlan(log(['marketing', 'revoked'], ['cart_recovery', 'revoked']))).toEqual([]);
    expect(optInPlan(log(['appointment', 'granted']))).toEqual([]);
  });
  it('a request that was revoked before it was confirmed is not restored', () => {
    expect(optInPlan(log(['marketing', 'requested'], ['marketing', 'revoked']))).toEqual([]);
  });
  it('YES confirms a pending double opt-in', () => {
    expect(optInPlan(log(['marketing', 'requested']))).toEqual(['marketing']);
    expect(optInPlan(log(['marketing', 'granted'], ['marketing', 'revoked'], ['marketing', 'requested']))).toEqual(['marketing']);
  });
  it('restores revoked purposes that need no express consent, even without an earlier grant', () => {
    const events = log(['transactional', 'revoked'], ['appointment', 'revoked'], ['marketing', 'revoked']);
    expect(optInPlan(events)).toEqual(['transactional', 'appointment']);
  });
  it('leaves granted purposes alone', () => {
    expect(optInPlan(log(['marketing', 'granted'], ['cart_recovery', 'granted']))).toEqual([]);
  });
  it('property: an express purpose is planned only if it is pending or was once granted, and applying the plan grants it', () => {
    fc.assert(
      fc.property(eventLogs, (events) => {
        const plan = optInPlan(events);
        const before = deriveConsent(events);
        for (const p of plan) {
          if (EXPRESS_CONSENT.has(p)) {
            expect(before[p] === 'pending' || events.some((e) => e.purpose === p && e.action === 'granted')).toBe(true);
          }
        }
        const last = Math.max(0, ...events.map((e) => e.seq));
        const applied = [...events, ...plan.map((purpose, i): ConsentEvent => ({ seq: last + 1 + i, purpose, action: 'granted', at }))];
        const after = deriveConsent(applied);
        for (const p of plan) expect(after[p]).toBe('granted');
        for (const p of CONSENT_PURPOSES) if (!plan.includes(p)) expect(after[p]).toBe(before[p]);
      }),
    );
  });
});
