import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nulField } from '../src/http/problem.ts';

describe('nulField: where a request part holds U+0000', () => {
  it('names the first field, nested and in arrays, keys too; ignores buffers', () => {
    expect(nulField({ to: '+1', body: 'a\u0000b' })).toBe('body');
    expect(nulField({ constructor: 'x', body: 'a\u0000b' })).toBe('body');
    expect(nulField({ attributes: { tier: ['x', 'y\u0000'] } })).toBe('attributes.tier.1');
    expect(nulField({ attributes: { 'ti\u0000er': 'gold' } })).toBe('attributes.ti\\u0000er');
    expect(nulField('\u0000')).toBe('(root)');
    expect(nulField({ raw: Buffer.from([0, 1, 2]) })).toBeUndefined();
    expect(nulField(Buffer.from('a\u0000b'))).toBeUndefined();
    const query = Object.create(Object.create(null) as object) as Record<string, string>; // as fast-querystring builds one
    query.to = '+1415\u0000';
    expect(nulField(query)).toBe('to');
  });

  it('finds one exactly when some string or key holds it (property)', () => {
    fc.assert(
      // strings of a small alphabet that holds U+0000, so that about half the values have one somewhere
      fc.property(fc.jsonValue({ stringUnit: fc.constantFrom('a', 'é', '\u0000', '"') }), (value) => {
        const text = JSON.stringify(value) ?? '';
        expect(nulField(value) !== undefined).toBe(text.includes('\\u0000'));
      }),
    );
  });
});
