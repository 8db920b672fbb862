import { validationError } from './errors.ts';

/**
 * Cursor pagination over a unique, sortable key (our ids sort by creation
 * time). Lists run newest first; the cursor is the last key of the previous
 * page, opaque to clients.
 */
export interface PageRequest {
  limit: number;
  /** Decoded: return rows with a key strictly below this one. */
  before: string | undefined;
}

export interface Page<T> {
  data: T[];
  next_cursor: string | null;
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 200;

export function encodeCursor(key: string): string {
  return Buffer.from(JSON.stringify({ b: key })).toString('base64url');
}

const CURSOR_KEY = /^[A-Za-z0-9_]{1,100}$/;

export function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (
      typeof parsed === 'object' &&
      parsed !== null &&
      'b' in parsed &&
      typeof parsed.b === 'string' &&
      // every key a cursor carries is an id or a sequence number: nothing else reaches the SQL
      CURSOR_KEY.test(parsed.b)
    ) {
      return parsed.b;
    }
  } catch {
    // fall through
  }
  throw validationError('cursor', 'is not a cursor returned by this API');
}

export function pageRequest(query: { limit?: number; cursor?: string }): PageRequest {
  return { limit: query.limit ?? DEFAULT_PAGE_SIZE, before: decodeCursor(query.cursor) };
}

/** Turn `limit + 1` fetched rows into a page and the next cursor. */
export function toPage<R, T>(
  rows: R[],
  req: PageRequest,
  keyOf: (row: R) => string,
  convert: (row: R) => T,
): Page<T> {
  const hasMore = rows.length > req.limit;
  const pageRows = hasMore ? rows.slice(0, req.limit) : rows;
  const last = pageRows[pageRows.length - 1];
  return {
    data: pageRows.map(convert),
    next_cursor: hasMore && last !== undefined ? encodeCursor(keyOf(last)) : null,
  };
}
