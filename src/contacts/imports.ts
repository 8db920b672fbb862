import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CsvError, parse } from 'csv-parse';
import type { Db } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';
import { CSV_OPTIONS } from './csv.ts';
import { type Batch, writeBatch } from './importBatch.ts';
import { readRow } from './importRows.ts';
import { finishImport, type ImportRecord, readChunk, startImport } from './imports.store.ts';

/** Rows written per transaction. */
export const IMPORT_BATCH_ROWS = 1000;

function importIdOf(payload: unknown): string {
  const value = typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>).importId : undefined;
  if (typeof value !== 'string' || value === '') throw new Error('job payload: importId must be a non-empty string');
  return value;
}

/** The stored file, one chunk at a time, in upload order. */
async function* chunksOf(db: Db, importId: string): AsyncGenerator<Buffer> {
  for (let seq = 0; ; seq++) {
    const data = await readChunk(db, importId, seq);
    if (data === undefined) return;
    yield data;
  }
}

/**
 * The `contact_import` job: parse an uploaded CSV from its stored chunks
 * through a streaming parser, and write it in batches (see importBatch.ts).
 * Safe to run twice: a rerun re-reads the file from the start, skips the
 * rows whose batch has committed (`rows_done`), and carries on. A file that
 * is not valid CSV ends the import `failed` with the parser's message (rows
 * before the fault stay imported); any other error is thrown, so the job
 * is retried.
 */
export async function runContactImport(deps: { db: Db; log: Logger }, payload: unknown): Promise<void> {
  const { db } = deps;
  const importId = importIdOf(payload);
  let imp: ImportRecord | undefined = await startImport(db, importId);
  if (imp === undefined) return;
  const log = deps.log.child({ import_id: importId, workspace_id: imp.workspace_id });
  const { columns, default_country: defaultCountry } = imp.mapping;
  const skip = imp.rows_done;
  if (skip > 0) log.info({ rows_done: skip }, 'contact import resumed');

  const parser = parse(CSV_OPTIONS);
  // at most two chunks read ahead of the parser
  const feeding = pipeline(Readable.from(chunksOf(db, importId), { highWaterMark: 2 }), parser);
  // its failure is the parser's too, seen by the loop below: never an unhandled rejection
  feeding.catch(() => {});
  let dataRows = 0;
  let batch: Batch = { before: skip, size: 0, valid: [], invalid: [] };
  const flush = async (): Promise<boolean> => {
    if (batch.size === 0) return true;
    const result = await writeBatch(db, imp!, batch);
    if (result.outcome === 'stale') {
      log.warn({ rows_done: result.rowsDone, expected: batch.before }, 'contact import moved on elsewhere; this run stops');
      return false;
    }
    imp = result.record;
    batch = { before: imp.rows_done, size: 0, valid: [], invalid: [] };
    return true;
  };
  try {
    let header = true;
    for await (const record of parser as AsyncIterable<string[]>) {
      if (header) {
        header = false;
        continue;
      }
      dataRows++;
      if (dataRows <= skip) continue;
      const outcome = readRow(columns, record, dataRows + 1, defaultCountry ?? undefined);
      if (outcome.ok) batch.valid.push(outcome.value);
      else batch.invalid.push(outcome.error);
      batch.size++;
      if (batch.size >= IMPORT_BATCH_ROWS && !(await flush())) {
        parser.destroy();
        return;
      }
    }
    await feeding;
    if (!(await flush())) return;
  } catch (err) {
    if (!(err instanceof CsvError)) throw err;
    // the rows parsed before the fault are written: they were valid
    if (!(await flush())) return;
    const row = dataRows + 2;
    const done = await finishImport(db, importId, { status: 'failed', error: `row ${row}: the file is not valid CSV: ${err.message}` });
    log.warn({ err, rows_done: done?.rows_done }, 'contact import failed: not valid CSV');
    return;
  }
  const done = await finishImport(db, importId, { status: 'completed' });
  if (done !== undefined) {
    log.info(
      { rows: done.rows_done, imported: done.rows_imported, merged: done.rows_merged, invalid: done.rows_invalid },
      'contact import completed',
    );
  }
}

/**
 * The `contact_import` job's last attempt failed too (a fault no rerun
 * mends): the import ends `failed` with the error instead of staying
 * `running` for good, and its stored file (personal data) is deleted with
 * it. The rows written before stay imported.
 */
export async function abandonContactImport(deps: { db: Db; log: Logger }, payload: unknown, attempts: number, err: unknown): Promise<void> {
  const importId = importIdOf(payload);
  const message = err instanceof Error ? err.message : String(err);
  const done = await finishImport(deps.db, importId, { status: 'failed', error: `gave up after ${attempts} attempts: ${message.slice(0, 500)}` });
  deps.log.error({ import_id: importId, err, attempts, rows_done: done?.rows_done }, 'contact import failed for good');
}
