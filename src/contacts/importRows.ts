import type { ConsentPurpose } from '../consent/index.ts';
import { parsePhone } from '../shared/phone.ts';
import { attributeValueProblem, localeProblem, nameProblem, NUL_PROBLEM, timezoneProblem } from './contacts.ts';
import type { Column } from './csv.ts';

/**
 * One CSV record → a contact to upsert, or the reason it is refused (pure).
 * Row numbers count the header as row 1, so the first data record is row 2
 * (a record with a quoted newline is still one row).
 */
export interface ImportRow {
  row: number;
  phone: string;
  country: string;
  first_name: string | null;
  last_name: string | null;
  timezone: string | null;
  locale: string | null;
  /** CSV values are kept as strings; an empty cell sets nothing. */
  attributes: Record<string, string>;
  consents: { purpose: ConsentPurpose; action: 'granted' | 'revoked' }[];
}

export interface RowError {
  row: number;
  field: string | null;
  reason: string;
}

export type RowOutcome = { ok: true; value: ImportRow } | { ok: false; error: RowError };

const GRANTED = new Set(['yes', 'y', 'true', '1', 'granted']);
const REVOKED = new Set(['no', 'n', 'false', '0', 'revoked']);

/** A consent cell: granted, revoked, nothing said (empty), or not understood (undefined). */
export function consentCell(value: string): 'granted' | 'revoked' | null | undefined {
  const v = value.trim().toLowerCase();
  if (v === '') return null;
  if (GRANTED.has(v)) return 'granted';
  if (REVOKED.has(v)) return 'revoked';
  return undefined;
}

const shown = (value: string) => JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);

export function readRow(columns: readonly Column[], record: readonly string[], row: number, defaultCountry?: string): RowOutcome {
  const fail = (field: string | null, reason: string): RowOutcome => ({ ok: false, error: { row, field, reason } });
  if (record.length !== columns.length) return fail(null, `has ${record.length} fields, the header has ${columns.length}`);
  // the phone first: without it the row is nothing, whatever else is wrong
  const rawPhone = (record[columns.findIndex((c) => c.field === 'phone')] ?? '').trim();
  const phone = parsePhone(rawPhone, defaultCountry);
  // The reason does not repeat the number: error rows are kept, and an
  // erasure of that number (which finds it by its E.164 form) could not
  // find it in them. The row number points at it in the client's file.
  if (!phone.ok) return fail('phone', phone.problem);
  const out: ImportRow = {
    row,
    phone: phone.e164,
    country: phone.country,
    first_name: null,
    last_name: null,
    timezone: null,
    locale: null,
    attributes: {},
    consents: [],
  };
  for (const [i, column] of columns.entries()) {
    const value = record[i]!.trim();
    const field = column.field;
    if (field === 'ignore' || field === 'phone' || value === '') continue;
    if (value.includes('\u0000')) return fail(field, NUL_PROBLEM);
    if (field.startsWith('attributes.')) {
      const reason = attributeValueProblem(value);
      if (reason !== undefined) return fail(field, reason);
      out.attributes[field.slice('attributes.'.length)] = value;
    } else if (field.startsWith('consent_')) {
      const action = consentCell(value);
      if (action === undefined) return fail(field, `${shown(value)} is not one of yes, no, true, false, 1, 0, granted, revoked`);
      if (action !== null) out.consents.push({ purpose: field.slice('consent_'.length) as ConsentPurpose, action });
    } else {
      const check = field === 'timezone' ? timezoneProblem : field === 'locale' ? localeProblem : nameProblem;
      const reason = check(value);
      if (reason !== undefined) return fail(field, `${shown(value)} ${reason}`);
      out[field as 'first_name' | 'last_name' | 'timezone' | 'locale'] = value;
    }
  }
  return { ok: true, value: out };
}

/** The contact fields a row carries. */
export type ContactValues = Pick<ImportRow, 'phone' | 'country' | 'first_name' | 'last_name' | 'timezone' | 'locale' | 'attributes'>;

/** One contact's write in a batch: the fields of the rows that name its phone, folded in file order. */
export interface PhoneGroup {
  contact: ContactValues;
  /** how many rows of the batch name this phone */
  rows: number;
}

/**
 * Group rows by phone (a phone may appear many times in one file) and fold
 * each group in file order: a later non-empty value wins, attributes merge.
 * The same rule merges the group into an existing contact in SQL. A phone
 * named once keeps its row as is (no copy: a million-row import makes
 * garbage enough); the inputs are never changed.
 */
export function groupByPhone(rows: readonly ImportRow[]): PhoneGroup[] {
  const groups = new Map<string, PhoneGroup & { copied: boolean }>();
  for (const r of rows) {
    const g = groups.get(r.phone);
    if (g === undefined) {
      groups.set(r.phone, { contact: r, rows: 1, copied: false });
      continue;
    }
    g.rows++;
    if (!g.copied) {
      const { phone, country, first_name, last_name, timezone, locale, attributes } = g.contact;
      g.contact = { phone, country, first_name, last_name, timezone, locale, attributes: { ...attributes } };
      g.copied = true;
    }
    const c = g.contact;
    c.first_name = r.first_name ?? c.first_name;
    c.last_name = r.last_name ?? c.last_name;
    c.timezone = r.timezone ?? c.timezone;
    c.locale = r.locale ?? c.locale;
    Object.assign(c.attributes, r.attributes);
  }
  return [...groups.values()].map(({ contact, rows: n }) => ({ contact, rows: n }));
}
