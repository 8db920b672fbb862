import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
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
