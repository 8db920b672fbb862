import { describe, expect, it } from 'vitest';
import { checkRates, type Evidence } from '../chaos/checks.ts';
import type { SimMessage } from '../src/carriers/simulator/resources.ts';

const entry = (from: string, atMs: number): SimMessage => ({ from, to: '+14155550000', acceptedAt: new Date(atMs).toISOString() }) as SimMessage;
const evidence = (entries: { from: string; at: number }[]): Evidence => ({
  log: entries.map((e) => entry(e.from, e.at)),
  messages: new Map(),
  accepted: new Map(),
  strangers: [],
});

describe('the chaos run’s rate check', () => {
  const plans = { workspaces: [{ key: 'bloom', org: 'bloom' as const, sender: '+12065550103', senderMps: 10 }] };
  const t0 = Date.parse('2026-11-24T12:00:00Z');

  it('passes sends at the rate, a stall that bunched a few of them included', () => {
    // 10 a second for 20 s, four of them bunched by a stall; another sender's beside them
    const sends = Array.from({ length: 201 }, (_, i) => ({ from: '+12065550103', at: t0 + (i >= 50 && i < 54 ? 5_400 : i * 100 + (i % 3)) }));
    const others = Array.from({ length: 500 }, (_, i) => ({ from: '+13125550102', at: t0 + i * 10 }));
    const report = checkRates(evidence([...sends, ...others]), plans);
    expect(report.count, report.lines.join('\n')).toBe(0);
    expect(report.lines).toEqual(['sender +12065550103 (bloom): 10/s, 201 sends, busiest 10 s held 104 (allowed 108)']);
  });

  it('counts a sender that went faster', () => {
    // 20 % over the rate for 10 s
    const sends = Array.from({ length: 120 }, (_, i) => ({ from: '+12065550103', at: t0 + i * 83 }));
    const report = checkRates(evidence(sends), plans);
    expect(report.count).toBe(1);
    expect(report.lines[0]).toMatch(/^OVER sender/);
  });
});
