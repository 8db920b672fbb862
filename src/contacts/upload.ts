import { parse } from 'csv-parse/sync';
import { isSupportedCountry } from 'libphonenumber-js';
import type { Db } from '../db/db.ts';
import { addJob } from '../jobs/enqueue.ts';
import { DomainError, validationError } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import type { WorkspaceScope } from './contacts.ts';
import { requireList } from './contacts.store.ts';
import { CSV_OPTIONS, CsvScanner, type Column, MAX_RECORD_BYTES, resolveColumns } from './csv.ts';
import { type ContactImport, importRecordToImport, insertChunk, insertImport, markQueued } from './imports.store.ts';

/**
 * Receiving a CSV upload: the body is streamed into `contact_import_chunks`
 * rows of about 1 MiB (cut anywhere: the job re-joins the bytes) while its
 * records are counted, all in one transaction that ends by marking the
 * import queued and adding its job. A refused file (no header, no phone
 * column, no data row, too large, or a client that went away) rolls back
 * whole: nothing of it is stored.
 */
export const CHUNK_BYTES = 1024 * 1024;
export const MAX_UPLOAD_BYTES = 1024 * 1024 * 1024;

export interface UploadOptions {
  actor: string;
  /** CSV header → field */
  mapping?: Record<string, string>;
  listId?: string;
  defaultCountry?: string;
  maxBytes?: number;
}

export type UploadOutcome = { outcome: 'queued'; import: ContactImport } | { outcome: 'too_large'; maxBytes: number };

class TooLarge extends Error {}

export function parseMapping(raw: string | undefined): Record<string, string> | undefined {
  if (raw === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw validationError('mapping', 'must be a JSON object of CSV header → field');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw validationError('mapping', 'must be a JSON object of CSV header → field');
  }
  for (const [key, value] of Object.entries(parsed)) {
    if (typeof value !== 'string') throw validationError(`mapping.${key}`, 'must be a string (a field name)');
  }
  return parsed as Record<string, string>;
}

function headerColumns(header: Buffer, mapping: Record<string, string> | undefined): Column[] {
  let records: string[][];
  try {
    records = parse(header, CSV_OPTIONS) as string[][];
  } catch (err) {
    throw validationError('body', `the header line is not valid CSV: ${(err as Error).message}`);
  }
  const resolved = resolveColumns(records[0] ?? [], mapping);
  if (!resolved.ok) throw validationError(resolved.field, resolved.reason);
  return resolved.columns;
}

export async function receiveImport(
  db: Db,
  scope: WorkspaceScope,
  body: AsyncIterable<Buffer | string>,
  options: UploadOptions,
): Promise<UploadOutcome> {
  const maxBytes = options.maxBytes ?? MAX_UPLOAD_BYTES;
  if (options.defaultCountry !== undefined && !isSupportedCountry(options.defaultCountry)) {
    throw validationError('default_country', 'is not a country with a known numbering plan');
  }
  if (options.listId !== undefined) {
    await requireList(db, scope.workspaceId, options.listId).catch((err: unknown) => {
      throw err instanceof DomainError && err.code === 'not_found' ? validationError('list_id', 'is not a list of this workspace') : err;
    });
  }
  const id = newId('imp');
  try {
    return await db.transaction().execute(async (trx) => {
      const scanner = new CsvScanner();
      let started = false;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let seq = 0;
      const start = async (header: Buffer) => {
        const columns = headerColumns(header, options.mapping);
        await insertImport(trx, {
          id,
          ...scope,
          mapping: { columns, default_country: options.defaultCountry ?? null },
          listId: options.listId ?? null,
          createdBy: options.actor,
        });
        started = true;
      };
      const flush = async (all: boolean) => {
        while (pendingBytes >= CHUNK_BYTES || (all && pendingBytes > 0)) {
          const joined = Buffer.concat(pending);
          const chunk = joined.subarray(0, CHUNK_BYTES);
          await insertChunk(trx, id, seq++, chunk);
          const rest = joined.subarray(chunk.length);
          pending = rest.length > 0 ? [rest] : [];
          pendingBytes = rest.length;
        }
      };
      for await (const piece of body) {
        const buf = typeof piece === 'string' ? Buffer.from(piece) : piece;
        if (scanner.bytes + buf.length > maxBytes) throw new TooLarge();
        scanner.push(buf);
        pending.push(buf);
        pendingBytes += buf.length;
        if (scanner.headerTooLong) throw validationError('body', `the header line is longer than ${MAX_RECORD_BYTES} bytes`);
        if (!started && scanner.header !== undefined) await start(scanner.header);
        if (started) await flush(false);
      }
      scanner.end();
      if (scanner.records === 0) throw validationError('body', 'is empty: a CSV file with a header line and at least one row is expected');
      if (!started) await start(scanner.header!);
      if (scanner.records < 2) throw validationError('body', 'has a header line but no data rows');
      await flush(true);
      // header excluded; a record with a quoted newline is one row
      const record = await markQueued(trx, id, scanner.records - 1);
      await addJob(trx, 'contact_import', { importId: id }, { maxAttempts: 5 });
      return { outcome: 'queued' as const, import: importRecordToImport(record) };
    });
  } catch (err) {
    if (err instanceof TooLarge) return { outcome: 'too_large', maxBytes };
    throw err;
  }
}
