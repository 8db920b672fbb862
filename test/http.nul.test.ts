import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_NESTING, unstorableField } from '../src/http/problem.ts';

const fieldOf = (value: unknown) => unstorableField(value)?.field;

describe('unstorableField: where a request part holds what PostgreSQL cannot store', () => {
  it('names the first field with U+0000, nested and in arrays, keys too; ignores buffers', () => {
    expect(fieldOf({ to: '+1', body: 'a\u0000b' })).toBe('body');
    expect(fieldOf({ constructor: 'x', body: 'a\u0000b' })).toBe('body');
    expect(fieldOf({ attributes: { tier: ['x', 'y\u0000'] } })).toBe('attributes.tier.1');
    expect(fieldOf({ attributes: { 'ti\u0000er': 'gold' } })).toBe('attributes.ti\\u0000er');
    expect(fieldOf('\u0000')).toBe('(root)');
    expect(fieldOf({ raw: Buffer.from([0, 1, 2]) })).toBeUndefined();
    expect(fieldOf(Buffer.from('a\u0000b'))).toBeUndefined();
    const query = Object.create(Object.create(null) as object) as Record<string, string>; // as fast-querystring builds one
    query.to = '+1415\u0000';
    expect(fieldOf(query)).toBe('to');
    expect(fieldOf({ a: 'x', b: ['\u0000'], c: '\u0000' })).toBe('b.0'); // document order
  });

  it('finds lone UTF-16 surrogates, and only those', () => {
    expect(unstorableField({ body: 'a\ud800b' })).toEqual({ field: 'body', reason: expect.stringContaining('lone UTF-16 surrogate') as unknown });
    expect(fieldOf({ body: 'end \udc00' })).toBe('body');
    expect(fieldOf({ body: '\ud83d' })).toBe('body');
    expect(fieldOf({ evidence: { ['k\udfff']: 1 } })).toBe('evidence.k\\udfff');
    expect(fieldOf({ body: 'emoji 😀 and 𝄞 are pairs' })).toBeUndefined();
  });

  it(`refuses values nested deeper than ${MAX_NESTING} levels without overflowing the stack`, () => {
    const nest = (n: number): unknown => (n === 0 ? 'x' : [nest(n - 1)]);
    expect(fieldOf({ evidence: nest(MAX_NESTING - 1) })).toBeUndefined();
    expect(unstorableField({ evidence: nest(MAX_NESTING) })?.reason).toMatch(/nested deeper/);
    expect(fieldOf(JSON.parse('['.repeat(100_000) + ']'.repeat(100_000)) as unknown)).toBeDefined();
    expect(fieldOf(nest(MAX_NESTING + 1))).toMatch(/^0(\.0)*$/);
  });

  it('finds one exactly when some string or key holds U+0000 or a lone surrogate (property)', () => {
    fc.assert(
      // a small alphabet holding both, so that many values have one somewhere
      fc.property(fc.jsonValue({ maxDepth: 5, stringUnit: fc.constantFrom('a', 'é', '\u0000', '"', '\ud800', '\udc00') }), (value) => {
        const text = JSON.stringify(value) ?? '';
        const unstorable = text.includes('\\u0000') || /\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}/.test(text);
        expect(fieldOf(value) !== undefined).toBe(unstorable);
      }),
    );
  });
});
