import { parse } from 'csv-parse/sync';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { consentCell, CsvScanner, groupByPhone, mergeAttributes, readRow, resolveColumns, validateContactFields } from '../src/contacts/index.ts';
import { CSV_OPTIONS } from '../src/contacts/csv.ts';

/** The pure parts of contacts: the upload's record counter, column mapping, row reading and merging. */

const field = fc.oneof(
  fc.string({ unit: fc.constantFrom('a', 'b', ' ', 'é', '😀'), maxLength: 6 }),
  fc.string({ unit: fc.constantFrom('a', ',', '"', '\n', '\r\n', ' '), maxLength: 6 }),
);
const quote = (v: string) => (/[",\n\r]/.test(v) || v === '' ? `"${v.replaceAll('"', '""')}"` : v);

/** Cut a buffer at random places, as a network would. */
function pieces(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of [...at, buf.length]) {
    out.push(buf.subarray(from, c));
    from = c;
  }
  return out;
}

function scan(buf: Buffer, cuts: number[]): CsvScanner {
  const s = new CsvScanner();
  for (const p of pieces(buf, cuts)) s.push(p);
  s.end();
  return s;
}

describe('CsvScanner counts records exactly as the parser reads them', () => {
  it('well-formed files: quoted commas, quotes and newlines, CRLF, blank lines, no final newline, any cut', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(field, { minLength: 1, maxLength: 4 }), { minLength: 0, maxLength: 12 }),
        fc.constantFrom('\n', '\r\n'),
        fc.boolean(),
        fc.array(fc.nat(), { maxLength: 8 }),
        (records, eol, finalNewline, cuts) => {
          const lines = records.map((r) => r.map(quote).join(','));
          const text = lines.join(eol) + (finalNewline && lines.length > 0 ? eol : '');
          const buf = Buffer.from(text);
          const parsed = parse(buf, CSV_OPTIONS) as string[][];
          expect(scan(buf, cuts).records).toBe(parsed.length);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('stray quotes inside unquoted fields and after closing quotes (kept as characters)', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', ',', '"', '\n'), maxLength: 30 }), fc.array(fc.nat(), { maxLength: 5 }), (text, cuts) => {
        const buf = Buffer.from(text);
        let parsed: unknown[];
        try {
          parsed = parse(buf, CSV_OPTIONS) as unknown[];
        } catch {
          return; // not valid CSV even relaxed (an unclosed quote): the job fails such a file
        }
        expect(scan(buf, cuts).records).toBe(parsed.length);
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps the header bytes, even when cut across pieces', () => {
    const buf = Buffer.from('\uFEFFphone,"first\nname",tier\n+14155550100,Ann,gold\n');
    const s = scan(buf, [3, 9, 20]);
    expect(s.records).toBe(2);
    expect(parse(s.header!, CSV_OPTIONS)).toEqual([['phone', 'first\nname', 'tier']]);
  });
});

describe('resolveColumns', () => {
  it('named fields by header (case and spaces ignored), others become attributes, empty headers are ignored', () => {
    const r = resolveColumns(['Phone', 'First Name', 'tier', '', 'consent_marketing']);
    expect(r).toEqual({
      ok: true,
      columns: [
        { header: 'Phone', field: 'phone' },
        { header: 'First Name', field: 'first_name' },
        { header: 'tier', field: 'attributes.tier' },
        { header: '', field: 'ignore' },
        { header: 'consent_marketing', field: 'consent_marketing' },
      ],
    });
  });

  it('a mapping wins; unknown fields, unknown headers, two columns for one field and no phone are refused', () => {
    expect(resolveColumns(['Mobile', 'Notes'], { Mobile: 'phone', Notes: 'ignore' })).toMatchObject({ ok: true });
    expect(resolveColumns(['Mobile'], { Mobile: 'telephone' })).toMatchObject({ ok: false, field: 'mapping.Mobile' });
    expect(resolveColumns(['Mobile'], { Cell: 'phone' })).toMatchObject({ ok: false, field: 'mapping.Cell', reason: 'is not a column of the file' });
    expect(resolveColumns(['phone', 'Mobile'], { Mobile: 'phone' })).toMatchObject({ ok: false, field: 'body' });
    expect(resolveColumns(['name', 'email'])).toMatchObject({ ok: false, field: 'body', reason: expect.stringContaining('no phone column') });
  });
});

describe('readRow', () => {
  const { columns } = resolveColumns(['phone', 'first_name', 'timezone', 'consent_marketing', 'consent_transactional', 'tier']) as {
    columns: Parameters<typeof readRow>[0];
  };

  it('a valid row, national numbers with a default country, consent words', () => {
    const r = readRow(columns, [' (415) 555-0101 ', 'Ann', 'America/Chicago', 'YES', 'revoked', 'gold'], 2, 'US');
    expect(r).toEqual({
      ok: true,
      value: {
        row: 2,
        phone: '+14155550101',
        country: 'US',
        first_name: 'Ann',
        last_name: null,
        timezone: 'America/Chicago',
        locale: null,
        attributes: { tier: 'gold' },
        consents: [
          { purpose: 'marketing', action: 'granted' },
          { purpose: 'transactional', action: 'revoked' },
        ],
      },
    });
  });

  it('refusals name the row, the field and the reason; the phone is checked first', () => {
    expect(readRow(columns, ['12', 'Ann', 'Mars/Base', '', '', ''], 7)).toMatchObject({ ok: false, error: { row: 7, field: 'phone' } });
    expect(readRow(columns, ['', 'Ann', '', '', '', ''], 3)).toMatchObject({ ok: false, error: { field: 'phone', reason: 'is empty' } });
    expect(readRow(columns, ['+14155550101', 'Ann', 'Mars/Base', '', '', ''], 4)).toMatchObject({
      ok: false,
      error: { row: 4, field: 'timezone', reason: expect.stringContaining('IANA') },
    });
    expect(readRow(columns, ['+14155550101', '', '', 'maybe', '', ''], 5)).toMatchObject({ ok: false, error: { field: 'consent_marketing' } });
    expect(readRow(columns, ['+14155550101', 'Ann'], 6)).toMatchObject({ ok: false, error: { field: null, reason: 'has 2 fields, the header has 6' } });
  });

  it('consent cells', () => {
    for (const v of ['yes', 'True', '1', 'granted', 'Y']) expect(consentCell(v)).toBe('granted');
    for (const v of ['no', 'FALSE', '0', 'revoked', 'n']) expect(consentCell(v)).toBe('revoked');
    expect(consentCell('  ')).toBeNull();
    expect(consentCell('perhaps')).toBeUndefined();
  });
});

describe('merging', () => {
  it('rows for one phone fold in file order: later non-empty values win, attributes merge', () => {
    const base = { phone: '+14155550101', country: 'US', last_name: null, locale: null, consents: [] };
    const groups = groupByPhone([
      { ...base, row: 2, first_name: 'Ann', timezone: 'America/Chicago', attributes: { tier: 'gold', city: 'Austin' } },
      { ...base, row: 3, phone: '+14155550102', first_name: 'Bob', timezone: null, attributes: {} },
      { ...base, row: 4, first_name: null, timezone: 'America/Denver', attributes: { tier: 'silver' } },
    ]);
    expect(groups.map((g) => [g.contact.phone, g.rows])).toEqual([
      ['+14155550101', 2],
      ['+14155550102', 1],
    ]);
    expect(groups[0]!.contact).toMatchObject({ first_name: 'Ann', timezone: 'America/Denver', attributes: { tier: 'silver', city: 'Austin' } });
  });

  it('an attributes patch: set keys win, null removes (property)', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ maxLength: 3 }), fc.oneof(fc.string(), fc.integer(), fc.boolean())),
        fc.dictionary(fc.string({ maxLength: 3 }), fc.oneof(fc.string(), fc.integer(), fc.constant(null))),
        (current, patch) => {
          const merged = mergeAttributes(current, patch);
          for (const [k, v] of Object.entries(patch)) expect(k in merged ? merged[k] : null).toEqual(v);
          for (const [k, v] of Object.entries(current)) if (!(k in patch)) expect(merged[k]).toEqual(v);
        },
      ),
    );
  });

  it('field rules name the field', () => {
    expect(() => validateContactFields({ timezone: 'Nowhere/Town' })).toThrow(/timezone/);
    expect(() => validateContactFields({ locale: 'english please' })).toThrow(/locale/);
    // PostgreSQL cannot store U+0000: a 422 naming the field, not a 500 from the database
    expect(() => validateContactFields({ first_name: 'Ja\u0000ne' })).toThrow(/first_name: contains a NUL character/);
    expect(() => validateContactFields({ attributes: { tier: 'go\u0000ld' } })).toThrow(/attributes\.tier: contains a NUL character/);
    expect(() => validateContactFields({ attributes: { 'ti\u0000er': 'gold' } })).toThrow(/NUL character/);
    expect(() => validateContactFields({ attributes: { '': 'x' } })).toThrow(/attributes\./);
    expect(() => validateContactFields({ timezone: 'Europe/Paris', locale: 'fr-CA', attributes: { vip: true, n: 3 } })).not.toThrow();
  });
});
