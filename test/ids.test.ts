import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { incrementBase32, isId, newId, orderedId } from '../src/shared/ids.ts';

describe('ids', () => {
  it('ids made one after another in a process sort in the order they were made, within a millisecond too', () => {
    // thousands in a tight loop: most share their millisecond with others
    const ids = Array.from({ length: 5_000 }, () => newId('ct'));
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!, `${ids[i - 1]} then ${ids[i]}`).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(isId(id, 'ct')).toBe(true);
  });

  it('a clock that steps back does not make an id sort before the ones already made', () => {
    const first = newId('msg');
    const later = newId('msg', Date.now() - 60_000);
    expect(later > first).toBe(true);
    expect(isId(later, 'msg')).toBe(true);
  });

  it('the random part plus one: carries, and sorts after the value it came from', () => {
    expect(incrementBase32('0000')).toBe('0001');
    expect(incrementBase32('000Z')).toBe('0010');
    expect(incrementBase32('0ZZZ')).toBe('1000');
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...'0123456789ABCDEFGHJKMNPQRSTVWXYZ'), { minLength: 16, maxLength: 16 }), (chars) => {
        const v = chars.join('');
        if (v === 'Z'.repeat(16)) return;
        const next = incrementBase32(v);
        expect(next.length).toBe(16);
        expect(next > v).toBe(true);
      }),
    );
  });

  it('ordered ids keep the time given and sort by their position within a millisecond', () => {
    const now = Date.now() - 5_000;
    const a = orderedId('msg', 'STEMAB', 1, now);
    const b = orderedId('msg', 'STEMAB', 2, now);
    expect(a < b).toBe(true);
    expect(a.slice(0, 14)).toBe(b.slice(0, 14));
    expect(isId(a, 'msg')).toBe(true);
    // the time part is that of `now`, whatever ids were made since
    newId('msg');
    expect(orderedId('msg', 'STEMAB', 1, now)).toBe(a);
  });
});
