import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { judgeRecipient } from '../src/campaigns/recipient.ts';
import { parseTemplate, render, type Variables } from '../src/campaigns/template.ts';

const renderText = (template: string, vars: Variables) => {
  const parsed = parseTemplate(template);
  if (!parsed.ok) throw new Error(parsed.reason);
  return render(parsed, vars);
};

describe('campaign templates', () => {
  it('fills placeholders, with fallbacks for missing or blank values', () => {
    expect(renderText('Hi {{first_name}}!', { first_name: 'Ann' })).toBe('Hi Ann!');
    expect(renderText('Hi {{ first_name | there }}!', { first_name: '  ' })).toBe('Hi there!');
    expect(renderText('Hi {{first_name|there}}!', {})).toBe('Hi there!');
    expect(renderText('Hi {{first_name}}!', { first_name: null })).toBe('Hi !');
    expect(renderText('{{attributes.tier|basic}} / {{tier}}', { tier: 'gold' })).toBe('gold / gold');
    expect(renderText('{{visits}} visits, vip: {{vip}}', { visits: 3, vip: false })).toBe('3 visits, vip: false');
  });

  it('never renders what a contact does not have of its own (inherited names, objects)', () => {
    expect(renderText('Hi {{constructor|friend}}', { first_name: 'Ann' })).toBe('Hi friend');
    expect(renderText('{{toString|a}}{{valueOf|b}}{{__proto__|c}}{{hasOwnProperty|d}}', {})).toBe('abcd');
    expect(renderText('{{prefs|none}}', { prefs: { sms: true } })).toBe('none');
    expect(renderText('{{tags|none}}', { tags: ['a', 'b'] })).toBe('none');
  });

  it('refuses malformed placeholders', () => {
    expect(parseTemplate('Hi {{first name}}').ok).toBe(false);
    expect(parseTemplate('Hi {{first_name').ok).toBe(false);
    expect(parseTemplate('Hi first_name}}').ok).toBe(false);
  });

  it('text without placeholders renders as written, and a value never leaks beyond its placeholder (property)', () => {
    const text = fc.string().filter((s) => !s.includes('{') && !s.includes('}'));
    fc.assert(
      fc.property(text, text, fc.dictionary(fc.string({ minLength: 1 }), fc.string()), (before, after, vars) => {
        expect(renderText(before, vars)).toBe(before);
        const out = renderText(`${before}{{first_name|x}}${after}`, { ...vars, first_name: 'Zed' });
        expect(out).toBe(`${before}Zed${after}`);
      }),
    );
  });
});

describe('judgeRecipient: skipped for free, or priced (advance, quote and preview)', () => {
  const context = { allowed: ['US', 'GB'], priceList: undefined, consentOk: true };
  it('one row per reason, in order', () => {
    expect(judgeRecipient('not a number', 'Hi', context).skip).toBe('invalid_number');
    expect(judgeRecipient('+33612345678', 'Hi', context).skip).toBe('country_not_allowed');
    expect(judgeRecipient('+14155550123', '   ', context).skip).toBe('empty_body');
    expect(judgeRecipient('+14155550123', 'x'.repeat(1_601), context).skip).toBe('body_too_long');
    expect(judgeRecipient('+14155550123', '😀'.repeat(1_600), context).skip).toBeNull(); // 1,600 characters, 3,200 code units
    expect(judgeRecipient('+14155550123', 'Hi', { ...context, consentOk: false }).skip).toBe('no_consent');
    const ok = judgeRecipient('+447400123456', 'Hi', context);
    expect(ok.skip === null && ok.priced).toMatchObject({ country: 'GB', segments: 1, cost: 2 });
  });
});
