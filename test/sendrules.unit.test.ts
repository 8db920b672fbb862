import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decide, type RuleRow } from '../src/messaging/rules.ts';
import { applyFrequencyCaps, applyHourlyCap, checkNumber, effectiveFrequencyCaps, validateRulesPatch } from '../src/sendrules/index.ts';
import { parsePhone } from '../src/shared/phone.ts';

const open = { organizationFrozen: false, workspaceSmsEnabled: true, debt: 0 };
const row = (over: Partial<RuleRow> = {}): RuleRow => ({
  purpose: 'marketing',
  producer: 'api',
  country: 'US',
  to_number: '+14155550123',
  recipient_timezone: 'America/Los_Angeles',
  sms_enabled: true,
  home_country: 'US',
  allowed_countries: null,
  send_windows: {},
  consent_ok: true,
  campaign_running: true,
  campaign_ended: false,
  subscription_ok: true,
  ...over,
});
// 2026-11-24 (a Tuesday) 12:00 in Los Angeles
const noonLA = new Date('2026-11-24T20:00:00Z');
const nightLA = new Date('2026-11-24T07:30:00Z'); // 23:30 the day before, local

describe('the send-time decision', () => {
  it('a message whose carrier call may come after its window closes is deferred, not claimed (property)', () => {
    // marketing in Los Angeles: 10:00–19:00 local by default; 19:00 PST = 03:00 UTC the next day
    const close = new Date('2026-11-25T03:00:00Z');
    expect(decide(row(), open, new Date(close.getTime() - 1_000), 2_000)).toMatchObject({ action: 'defer', reason: 'quiet_hours' });
    expect(decide(row(), open, new Date(close.getTime() - 3_000), 2_000)).toEqual({ action: 'go' });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 7 * 86_400_000 }), fc.integer({ min: 0, max: 10_000 }), (offset, within) => {
        const now = new Date(noonLA.getTime() + offset);
        const d = decide(row(), open, now, within);
        if (d.action === 'go') {
          // open at every instant the call can be made
          for (const t of [0, within / 2, within]) expect(decide(row(), open, new Date(now.getTime() + t))).toEqual({ action: 'go' });
        } else {
          expect(d).toMatchObject({ action: 'defer' });
          if (d.action === 'defer') expect(decide(row(), open, d.until)).toEqual({ action: 'go' });
        }
      }),
      { numRuns: 300 },
    );
  });

  it('checks gates, then country, then consent, then the window', () => {
    expect(decide(row(), { ...open, organizationFrozen: true }, noonLA)).toEqual({ action: 'block', reason: 'organization_frozen' });
    expect(decide(row({ country: 'GB', to_number: '+447400123456' }), open, noonLA)).toEqual({ action: 'skip', reason: 'country_not_allowed' });
    expect(decide(row({ consent_ok: false }), open, nightLA)).toEqual({ action: 'skip', reason: 'no_consent' });
    expect(decide(row(), open, noonLA)).toEqual({ action: 'go' });
    expect(decide(row({ campaign_running: false }), open, noonLA)).toEqual({ action: 'block', reason: 'campaign_paused' });
    expect(decide(row(), open, nightLA)).toEqual({ action: 'defer', reason: 'quiet_hours', until: new Date('2026-11-24T18:00:00Z') });
  });

  it('transactional messages and system replies go at night; a workspace window narrows marketing', () => {
    expect(decide(row({ purpose: 'transactional' }), open, nightLA)).toEqual({ action: 'go' });
    expect(decide(row({ producer: 'system', purpose: 'transactional' }), open, nightLA)).toEqual({ action: 'go' });
    const narrowed = decide(row({ send_windows: { marketing: { start: '14:00', end: '16:00' } } }), open, noonLA);
    expect(narrowed).toEqual({ action: 'defer', reason: 'quiet_hours', until: new Date('2026-11-24T22:00:00Z') });
  });

  it('a Florida number stops at 20:00 even when the workspace allows 22:00', () => {
    const at = new Date('2026-11-25T01:30:00Z'); // 20:30 in Miami
    const d = decide(row({ to_number: '+13055550123', recipient_timezone: null, send_windows: { marketing: { start: '09:00', end: '22:00' } } }), open, at);
    expect(d).toEqual({ action: 'defer', reason: 'quiet_hours', until: new Date('2026-11-25T14:00:00Z') });
  });
});

describe('number safety', () => {
  it.each([
    ['+19002345678', 'premium_rate'],
    ['+33810123456', 'shared_cost'],
    ['+4930123456', 'not_mobile'],
    ['+447400123456', 'country_not_allowed'],
  ])('%s is refused as %s', (n, reason) => {
    const parsed = parsePhone(n);
    if (!parsed.ok) throw new Error('test number invalid');
    expect(checkNumber(parsed, ['US', 'FR', 'DE'])).toMatchObject({ ok: false, reason });
  });

  it('mobiles and US numbers of uncertain type pass when their country is allowed', () => {
    for (const n of ['+14155550123', '+447400123456', '+33612345678']) {
      const parsed = parsePhone(n);
      if (!parsed.ok) throw new Error('test number invalid');
      expect(checkNumber(parsed, ['US', 'GB', 'FR'])).toEqual({ ok: true });
    }
  });
});

describe('caps', () => {
  const now = new Date('2026-11-24T12:00:00Z');
  const caps = effectiveFrequencyCaps({});

  it('frequency: one marketing text per phone per 24 h, counting recent sends and the batch itself', () => {
    const r = applyFrequencyCaps(
      [
        { id: 'a', phone: '+1', purpose: 'marketing', exempt: false },
        { id: 'b', phone: '+1', purpose: 'marketing', exempt: false },
        { id: 'c', phone: '+2', purpose: 'marketing', exempt: false },
        { id: 'd', phone: '+3', purpose: 'marketing', exempt: false },
        { id: 'e', phone: '+3', purpose: 'transactional', exempt: false },
        { id: 'f', phone: '+2', purpose: 'marketing', exempt: true },
      ],
      [
        { phone: '+2', purpose: 'marketing', claimedAt: new Date(now.getTime() - 3_600_000) },
        { phone: '+3', purpose: 'marketing', claimedAt: new Date(now.getTime() - 25 * 3_600_000) },
      ],
      caps,
      now,
    );
    expect(r).toEqual({ allowed: ['a', 'd', 'e', 'f'], capped: ['b', 'c'] });
  });

  it('frequency (property): never more than `count` allowed per phone and purpose within the window', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ phone: fc.constantFrom('+1', '+2', '+3'), purpose: fc.constantFrom('marketing' as const, 'cart_recovery' as const) }), { maxLength: 30 }),
        fc.integer({ min: 1, max: 3 }),
        (items, count) => {
          const candidates = items.map((x, i) => ({ id: String(i), ...x, exempt: false }));
          const r = applyFrequencyCaps(candidates, [], effectiveFrequencyCaps({ marketing: { count, hours: 24 }, cart_recovery: { count, hours: 24 } }), now);
          const per = new Map<string, number>();
          for (const id of r.allowed) {
            const c = candidates[Number(id)]!;
            per.set(`${c.phone}${c.purpose}`, (per.get(`${c.phone}${c.purpose}`) ?? 0) + 1);
          }
          expect([...per.values()].every((v) => v <= count)).toBe(true);
          expect(r.allowed.length + r.capped.length).toBe(candidates.length);
        },
      ),
    );
  });

  it('a workspace can lift a cap (null) or set its own', () => {
    expect(effectiveFrequencyCaps({ marketing: null, cart_recovery: { count: 2, hours: 48 } })).toEqual({ cart_recovery: { count: 2, hours: 48 } });
  });

  it('hourly: lets the room through and defers the rest until the oldest minute leaves the hour', () => {
    const minutes = [
      { minute: new Date('2026-11-24T11:10:00Z'), sends: 3 },
      { minute: new Date('2026-11-24T11:40:00Z'), sends: 5 },
    ];
    const r = applyHourlyCap(['a', 'b', 'c', 'd'], 10, minutes, now);
    expect(r.allowed).toEqual(['a', 'b']);
    expect(r.deferred).toEqual(['c', 'd']);
    // room for 'c' appears when 11:10's three sends leave the hour
    expect(r.retryAt).toEqual(new Date('2026-11-24T12:10:01Z'));
  });
});

describe('sending rules validation', () => {
  it.each([
    [{ allowed_countries: ['us'] }, 'allowed_countries.0'],
    [{ send_windows: { marketing: { start: '19:00', end: '10:00' } } }, 'send_windows.marketing'],
    [{ send_windows: { fun: { start: '10:00', end: '11:00' } } }, 'send_windows.fun'],
    [{ frequency_caps: { marketing: { count: 0, hours: 24 } } }, 'frequency_caps.marketing.count'],
    [{ hourly_cap: -1 }, 'hourly_cap'],
  ])('%j is refused naming %s', (patch, field) => {
    expect(() => validateRulesPatch(patch as never)).toThrow(expect.objectContaining({ fields: [expect.objectContaining({ field })] }));
  });
});
