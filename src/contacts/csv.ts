import type { Options } from 'csv-parse';
import { CONSENT_PURPOSES } from '../consent/index.ts';
import { ATTRIBUTE_KEY_MAX, attributeKeyProblem, NUL_PROBLEM } from './contacts.ts';

/**
 * CSV dialect (pure): UTF-8 (a BOM is skipped), comma-separated, fields
 * optionally quoted with `"` (`""` inside is a quote; a quoted field may hold
 * commas and newlines), records ended by LF or CRLF, mixed in one file too
 * (a bare CR ends nothing: old Mac files are one long line, refused at
 * upload). Empty lines are
 * skipped. A `"` inside an unquoted field is kept as a character.
 */
export const MAX_RECORD_BYTES = 64 * 1024;

export const CSV_OPTIONS: Options = {
  bom: true,
  delimiter: ',',
  quote: '"',
  escape: '"',
  // As CsvScanner counts them, whatever the first line ends with: without
  // this csv-parse takes the first line's ending for every record, and a
  // CRLF header over LF rows ran all the rows together into one.
  record_delimiter: ['\r\n', '\n'],
  skip_empty_lines: true,
  relax_quotes: true,
  // record length is checked per row, so one short or long row is an error row, not a failed import
  relax_column_count: true,
  // an unclosed quote must fail the import, not swallow the rest of a large file into memory
  max_record_size: MAX_RECORD_BYTES,
};

const QUOTE = 0x22;
const COMMA = 0x2c;
const LF = 0x0a;
const CR = 0x0d;

// FIELD_START: before a field's first byte; UNQUOTED, QUOTED: inside a field;
// QUOTED_QUOTE: a `"` inside a quoted field (an escaped quote or the closing one).
const FIELD_START = 0;
const UNQUOTED = 1;
const QUOTED = 2;
const QUOTED_QUOTE = 3;

/**
 * Counts the records of a CSV byte stream fed in arbitrary pieces, the way
 * `CSV_OPTIONS` parses them (newlines inside quotes do not end a record;
 * empty lines are no record), and keeps the first record's bytes (the
 * header). Nothing else is kept: memory is constant whatever the file size.
 */
export class CsvScanner {
  records = 0;
  bytes = 0;
  private state = FIELD_START;
  private hasContent = false;
  private headerParts: Buffer[] = [];
  private headerBytes = 0;
  private headerDone = false;
  headerTooLong = false;

  push(buf: Buffer): void {
    this.bytes += buf.length;
    let state = this.state;
    let hasContent = this.hasContent;
    for (let i = 0; i < buf.length; i++) {
      const b = buf[i]!;
      if (b === LF) {
        if (state === QUOTED) continue;
        state = FIELD_START;
        if (hasContent) {
          this.records++;
          if (!this.headerDone) this.keepHeader(buf.subarray(0, i + 1), true);
        }
        hasContent = false;
        continue;
      }
      if (b === CR) continue;
      hasContent = true;
      if (state === FIELD_START) state = b === QUOTE ? QUOTED : b === COMMA ? FIELD_START : UNQUOTED;
      else if (state === UNQUOTED) state = b === COMMA ? FIELD_START : UNQUOTED;
      else if (state === QUOTED) state = b === QUOTE ? QUOTED_QUOTE : QUOTED;
      else state = b === QUOTE ? QUOTED : b === COMMA ? FIELD_START : UNQUOTED;
    }
    if (!this.headerDone) this.keepHeader(buf, false);
    this.state = state;
    this.hasContent = hasContent;
  }

  /** The end of the stream: a last record without a final newline counts. */
  end(): void {
    if (this.hasContent) {
      this.records++;
      if (!this.headerDone) this.headerDone = true;
    }
    this.hasContent = false;
  }

  /** The header's bytes once the first record is complete (or the stream ended). */
  get header(): Buffer | undefined {
    return this.headerDone && !this.headerTooLong ? Buffer.concat(this.headerParts) : undefined;
  }

  private keepHeader(part: Buffer, complete: boolean): void {
    this.headerBytes += part.length;
    if (this.headerBytes > MAX_RECORD_BYTES) this.headerTooLong = true;
    else this.headerParts.push(Buffer.from(part));
    if (complete) this.headerDone = true;
  }
}

/** What a column of the file fills. */
export type ImportField = (typeof CONTACT_FIELDS)[number] | ConsentField | `attributes.${string}` | 'ignore';
type ConsentField = `consent_${(typeof CONSENT_PURPOSES)[number]}`;

export const CONTACT_FIELDS = ['phone', 'first_name', 'last_name', 'timezone', 'locale'] as const;
export const CONSENT_FIELDS = CONSENT_PURPOSES.map((p) => `consent_${p}` as ConsentField);
const NAMED_FIELDS: readonly string[] = [...CONTACT_FIELDS, ...CONSENT_FIELDS];
export const MAX_COLUMNS = 200;

export interface Column {
  header: string;
  field: ImportField;
}

export type ColumnsResult = { ok: true; columns: Column[] } | { ok: false; field: string; reason: string };

const ATTRIBUTE_FIELD_RE = new RegExp(`^attributes\\.\\S.{0,${ATTRIBUTE_KEY_MAX - 1}}$`);

function isImportField(value: string): value is ImportField {
  return NAMED_FIELDS.includes(value) || value === 'ignore' || ATTRIBUTE_FIELD_RE.test(value);
}

/**
 * Decide what each column fills: the client's mapping first (header →
 * field); else a header named like a field (case and spaces ignored) fills
 * it; else it becomes an attribute of that name. A header with no name is
 * ignored. A field filled by two columns, or no phone column, is refused.
 */
export function resolveColumns(headers: readonly string[], mapping: Readonly<Record<string, string>> = {}): ColumnsResult {
  if (headers.length > MAX_COLUMNS) return { ok: false, field: 'body', reason: `has ${headers.length} columns, at most ${MAX_COLUMNS} are accepted` };
  const names = headers.map((h) => h.trim());
  // the mapping is stored with every header, ignored ones too
  const withNul = names.find((h) => h.includes('\u0000'));
  if (withNul !== undefined) return { ok: false, field: 'body', reason: `the header ${JSON.stringify(withNul.slice(0, 40))} ${NUL_PROBLEM}` };
  for (const [key, value] of Object.entries(mapping)) {
    if (!isImportField(value)) {
      return { ok: false, field: `mapping.${key}`, reason: `must be one of ${NAMED_FIELDS.join(', ')}, attributes.<name> or ignore` };
    }
    if (!names.includes(key.trim())) return { ok: false, field: `mapping.${key}`, reason: 'is not a column of the file' };
  }
  const mapped = new Map(Object.entries(mapping).map(([k, v]) => [k.trim(), v as ImportField]));
  const columns: Column[] = [];
  const seen = new Map<string, string>();
  for (const header of names) {
    const normal = header.toLowerCase().replaceAll(/[\s-]+/g, '_');
    const field: ImportField =
      mapped.get(header) ?? (header === '' ? 'ignore' : NAMED_FIELDS.includes(normal) ? (normal as ImportField) : `attributes.${header}`);
    if (field.length > 'attributes.'.length + ATTRIBUTE_KEY_MAX) {
      return { ok: false, field: 'body', reason: `column "${header.slice(0, 40)}…" makes an attribute name longer than ${ATTRIBUTE_KEY_MAX} characters: map it` };
    }
    const keyProblem = field.startsWith('attributes.') ? attributeKeyProblem(field.slice('attributes.'.length)) : undefined;
    if (keyProblem !== undefined) return { ok: false, field: 'body', reason: `column "${header}" makes an attribute whose ${keyProblem}: map it` };
    if (field !== 'ignore') {
      const other = seen.get(field);
      if (other !== undefined) return { ok: false, field: 'body', reason: `columns "${other}" and "${header}" both fill ${field}` };
      seen.set(field, header);
    }
    columns.push({ header, field });
  }
  if (!seen.has('phone')) return { ok: false, field: 'body', reason: 'has no phone column (name one "phone" or map one with mapping)' };
  return { ok: true, columns };
}
