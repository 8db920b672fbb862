import { IANAZone } from 'luxon';
import { validationError } from '../shared/errors.ts';

/**
 * Contacts (pure): the field rules shared by the API and the CSV import, and
 * the row → API conversion. A contact is one phone number in one workspace
 * (unique), with optional names, zone, locale and free attributes.
 */
export type AttributeValue = string | number | boolean;
export type Attributes = Record<string, AttributeValue>;

export const NAME_MAX = 100;
export const LOCALE_MAX = 35;
export const ATTRIBUTE_KEY_MAX = 100;
export const ATTRIBUTE_VALUE_MAX = 1000;
/** Keys one request (or one CSV file's columns) may set. */
export const ATTRIBUTES_PER_WRITE = 100;

// BCP 47-ish: a 2–3 letter language, then up to three subtags (script, region, variant); `_` accepted as `-`.
const LOCALE_RE = /^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$/;

// Checking a zone builds an Intl formatter (tens of µs): a million-row import asks about the same few zones.
const zoneValidity = new Map<string, boolean>();

export function timezoneProblem(value: string): string | undefined {
  let valid = zoneValidity.get(value);
  if (valid === undefined) {
    valid = IANAZone.isValidZone(value);
    if (zoneValidity.size < 10_000) zoneValidity.set(value, valid);
  }
  return valid ? undefined : 'must be an IANA time zone such as America/New_York';
}

export function localeProblem(value: string): string | undefined {
  return value.length <= LOCALE_MAX && LOCALE_RE.test(value) ? undefined : 'must be a BCP 47 language tag such as en or fr-CA';
}

/** PostgreSQL's text and jsonb cannot hold U+0000: a value with one could never be stored. */
export const NUL_PROBLEM = 'contains a NUL character (U+0000), which cannot be stored';

export function nameProblem(value: string): string | undefined {
  if (value.includes('\u0000')) return NUL_PROBLEM;
  return value.length <= NAME_MAX ? undefined : `must be at most ${NAME_MAX} characters`;
}

export function attributeKeyProblem(key: string): string | undefined {
  if (key.length === 0 || key.length > ATTRIBUTE_KEY_MAX) return `names must be 1 to ${ATTRIBUTE_KEY_MAX} characters`;
  if (key.includes('\u0000')) return `names ${NUL_PROBLEM}`;
  // assigned to a plain object it would set the prototype, not a key: the value would be lost
  if (key === '__proto__') return 'names may not be __proto__';
  return undefined;
}

export function attributeValueProblem(value: unknown): string | undefined {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) return NUL_PROBLEM;
    return value.length <= ATTRIBUTE_VALUE_MAX ? undefined : `must be at most ${ATTRIBUTE_VALUE_MAX} characters`;
  }
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : 'must be a finite number';
  if (typeof value === 'boolean') return undefined;
  return 'must be a string, a number or a boolean';
}

/** The optional fields a client sets on create and update; `null` clears (update only). */
export interface ContactFields {
  first_name?: string | null;
  last_name?: string | null;
  timezone?: string | null;
  locale?: string | null;
  /** On update, a key set to null is removed. */
  attributes?: Record<string, AttributeValue | null>;
}

/** Throw a 422 naming the first bad field (schema validation has already checked the types). */
export function validateContactFields(input: ContactFields): void {
  const check = (field: string, value: string | null | undefined, problem: (v: string) => string | undefined) => {
    if (value === null || value === undefined) return;
    const reason = problem(value);
    if (reason !== undefined) throw validationError(field, reason);
  };
  check('first_name', input.first_name, nameProblem);
  check('last_name', input.last_name, nameProblem);
  check('timezone', input.timezone, timezoneProblem);
  check('locale', input.locale, localeProblem);
  const attributes = Object.entries(input.attributes ?? {});
  if (attributes.length > ATTRIBUTES_PER_WRITE) throw validationError('attributes', `must have at most ${ATTRIBUTES_PER_WRITE} keys`);
  for (const [key, value] of attributes) {
    const reason = attributeKeyProblem(key) ?? (value === null ? undefined : attributeValueProblem(value));
    if (reason !== undefined) throw validationError(`attributes.${key}`, reason);
  }
}

/** Merge an attributes patch: set keys win, keys set to null are removed. */
export function mergeAttributes(current: Attributes, patch: Record<string, AttributeValue | null>): Attributes {
  const out: Attributes = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = value;
  }
  return out;
}

export interface ContactRow {
  id: string;
  organization_id: string;
  workspace_id: string;
  phone: string;
  country: string;
  first_name: string | null;
  last_name: string | null;
  timezone: string | null;
  locale: string | null;
  attributes: Attributes;
  created_at: Date;
  updated_at: Date;
}

export interface Contact {
  id: string;
  workspace_id: string;
  phone: string;
  country: string;
  first_name: string | null;
  last_name: string | null;
  timezone: string | null;
  locale: string | null;
  attributes: Attributes;
  created_at: string;
  updated_at: string;
}

export function contactRowToContact(r: ContactRow): Contact {
  return {
    id: r.id,
    workspace_id: r.workspace_id,
    phone: r.phone,
    country: r.country,
    first_name: r.first_name,
    last_name: r.last_name,
    timezone: r.timezone,
    locale: r.locale,
    attributes: r.attributes,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

/** The workspace a request acts on (resolved by the HTTP layer from the key). */
export interface WorkspaceScope {
  organizationId: string;
  workspaceId: string;
}
