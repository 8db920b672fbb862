import { validationError } from './errors.ts';

/**
 * An RFC 3339 date-time from a request, as a Date, or a 422 naming the
 * field. The schema's `date-time` format admits values JavaScript cannot
 * read (a leap second, 23:59:60) and PostgreSQL cannot store (year 0000):
 * unchecked, they reached the database as a 500 (and, in a shared intake
 * batch, failed every request of it).
 */
export function parseDateTime(field: string, value: string): Date {
  const date = new Date(value);
  const year = date.getUTCFullYear();
  if (Number.isNaN(date.getTime()) || year < 1 || year > 9999) {
    throw validationError(field, 'must be an RFC 3339 date-time between the years 1 and 9999 (a leap second is not accepted)');
  }
  return date;
}
