import { describe, expect, it } from 'vitest';
import { parseScale, planScenario, recipientPhone, SCALES, zoneFor } from '../chaos/scenario.ts';
import { parsePhone } from '../src/messaging/index.ts';

/** The chaos run's plan is pure: a seed replays it, and it holds what the run promises. */
describe('chaos scenario', () => {
  it('the same seed gives the same plan; another seed another schedule', () => {
    expect(planScenario(42, SCALES.small!)).toEqual(planScenario(42, SCALES.small!));
    expect(planScenario(43, SCALES.small!).actions).not.toEqual(planScenario(42, SCALES.small!).actions);
  });

  it('holds the faults and the actions the run promises, at every scale', () => {
    for (const [seed, scale] of [[1, SCALES.small!], [2, SCALES.default!], [3, SCALES.large!]] as const) {
      const s = planScenario(seed, scale);
      expect(s.campaigns.reduce((n, c) => n + c.recipients, 0)).toBe(scale.recipients);
      const transient = (s.faults.errors['20429'] ?? 0) + (s.faults.errors['20503'] ?? 0);
      const permanent = (s.faults.errors['21211'] ?? 0) + (s.faults.errors['21614'] ?? 0) + (s.faults.errors['21610'] ?? 0);
      expect(transient).toBeGreaterThanOrEqual(0.05);
      expect(permanent).toBeGreaterThanOrEqual(0.01);
      expect(s.faults.dropAfterAccept).toBeGreaterThanOrEqual(0.01);
      const kinds = new Set(s.actions.map((a) => a.kind));
      for (const k of ['kill_worker', 'pg_restart', 'outage', 'purchase', 'renewal', 'rollback', 'subscription_cancel', 'subscription_reactivate', 'dispute_open', 'dispute_close', 'operator_freeze', 'operator_unfreeze', 'storm', 'stop', 'api_send', 'refund'] as const) {
        expect(kinds.has(k), `${scale.name}: ${k}`).toBe(true);
      }
      expect(s.actions.filter((a) => a.kind === 'pg_restart')).toHaveLength(1);
      // a pack and a subscription invoice are refunded in part
      expect(s.actions.filter((a) => a.kind === 'refund').map((a) => a.kind === 'refund' && a.payment)).toEqual(expect.arrayContaining(['pack', 'invoice']));
      expect(s.actions.filter((a) => a.kind === 'outage')).toEqual([expect.objectContaining({ durationMs: 20_000 })]);
      // kills every few seconds through the whole window
      const kills = s.actions.filter((a) => a.kind === 'kill_worker').map((a) => a.atMs);
      expect(kills.length).toBeGreaterThanOrEqual(Math.floor(scale.actionWindowMs / 7_000) - 1);
      // every reopening comes after its closing
      const at = (k: string) => s.actions.find((a) => a.kind === k)!.atMs;
      expect(at('subscription_reactivate')).toBeGreaterThan(at('subscription_cancel'));
      expect(at('dispute_close')).toBeGreaterThan(at('dispute_open'));
      expect(at('operator_unfreeze')).toBeGreaterThan(at('operator_freeze'));
      // credits at the start cover about 70 % of the audience
      const start = s.orgs.reduce((n, o) => n + o.startCredits, 0) + s.planCredits;
      expect(start / scale.recipients).toBeCloseTo(0.7, 1);
    }
    expect(SCALES.small!.recipients).toBeGreaterThanOrEqual(10_000);
    expect(SCALES.default!.recipients).toBeGreaterThanOrEqual(100_000);
  });

  it('audience phones are valid, distinct mobile-capable numbers; zones put every recipient in the afternoon', () => {
    const s = planScenario(5, SCALES.large!);
    const seen = new Set<string>();
    for (const c of s.campaigns) {
      for (const seq of [1, 2, Math.floor(c.recipients / 2), c.recipients]) {
        const phone = recipientPhone(c, seq);
        const parsed = parsePhone(phone);
        expect(parsed, phone).toMatchObject({ ok: true });
        expect(parsed.ok && ['MOBILE', 'FIXED_LINE_OR_MOBILE'].includes(parsed.type), phone).toBe(true);
        seen.add(phone);
      }
    }
    expect(seen.size).toBe(s.campaigns.length * 4);
    for (let h = 0; h < 24; h++) {
      const now = new Date(Date.UTC(2026, 10, 23, h, 30));
      for (const seq of [0, 1, 2]) {
        const local = new Intl.DateTimeFormat('en-GB', { timeZone: zoneFor(seq, now), hour: 'numeric', hourCycle: 'h23' }).format(now);
        expect(Number(local), `${h}:30 UTC, seq ${seq}`).toBeGreaterThanOrEqual(12);
        expect(Number(local)).toBeLessThanOrEqual(16);
      }
    }
  });

  it('--scale takes a name or a number of recipients, and names what is wrong', () => {
    expect(parseScale('small')).toBe(SCALES.small);
    expect(parseScale('25000')).toMatchObject({ recipients: 25_000, workers: 3 });
    expect(parseScale('huge')).toEqual({ error: expect.stringContaining('--scale must be small, default, large') });
    expect(parseScale('10')).toHaveProperty('error');
  });
});
