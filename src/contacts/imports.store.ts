import { sql } from 'kysely';
import type { Db, DbOrTx } from '../db/db.ts';
import { notFound } from '../shared/errors.ts';
import type { Column } from './csv.ts';

/**
 * CSV imports' SQL. An import row is the job's checkpoint: `rows_done`
 * counts the data rows whose writes have committed, and moves only in the
 * transaction that wrote them.
 */
export const IMPORT_STATUSES = ['uploading', 'queued', 'running', 'completed', 'failed'] as const;
export type ImportStatus = (typeof IMPORT_STATUSES)[number];

/** `contact_imports.mapping`: the columns as resolved at upload, and the country for numbers written without +. */
export interface StoredMapping {
  columns: Column[];
  default_country: string | null;
}

export interface ImportRecord {
  id: string;
  organization_id: string;
  workspace_id: string;
  status: ImportStatus;
  mapping: StoredMapping;
  list_id: string | null;
  rows_total: number;
  rows_done: number;
  rows_imported: number;
  rows_merged: number;
  rows_invalid: number;
  consents_recorded: number;
  error: string | null;
  created_by: string;
  created_at: Date;
  finished_at: Date | null;
}

export interface ContactImport {
  id: string;
  workspace_id: string;
  status: ImportStatus;
  list_id: string | null;
  default_country: string | null;
  /** CSV header → field, as applied */
  mapping: Record<string, string>;
  rows_total: number;
  rows_done: number;
  rows_imported: number;
  rows_merged: number;
  rows_invalid: number;
  consents_recorded: number;
  error: string | null;
  created_at: string;
  finished_at: string | null;
}

export function importRecordToImport(r: ImportRecord): ContactImport {
  return {
    id: r.id,
    workspace_id: r.workspace_id,
    status: r.status,
    list_id: r.list_id,
    default_country: r.mapping.default_country,
    mapping: Object.fromEntries(r.mapping.columns.filter((c) => c.header !== '').map((c) => [c.header, c.field])),
    rows_total: r.rows_total,
    rows_done: r.rows_done,
    rows_imported: r.rows_imported,
    rows_merged: r.rows_merged,
    rows_invalid: r.rows_invalid,
    consents_recorded: r.consents_recorded,
    error: r.error,
    created_at: r.created_at.toISOString(),
    finished_at: r.finished_at?.toISOString() ?? null,
  };
}

export async function insertImport(
  db: DbOrTx,
  row: { id: string; organizationId: string; workspaceId: string; mapping: StoredMapping; listId: string | null; createdBy: string },
): Promise<void> {
  await sql`insert into contact_imports (id, organization_id, workspace_id, status, mapping, list_id, created_by)
    values (${row.id}, ${row.organizationId}, ${row.workspaceId}, 'uploading', ${JSON.stringify(row.mapping)}::jsonb,
      ${row.listId}, ${row.createdBy})`.execute(db);
}

export async function insertChunk(db: DbOrTx, importId: string, seq: number, data: Buffer): Promise<void> {
  await sql`insert into contact_import_chunks (import_id, seq, data) values (${importId}, ${seq}, ${data})`.execute(db);
}

export async function readChunk(db: DbOrTx, importId: string, seq: number): Promise<Buffer | undefined> {
  const { rows } = await sql<{ data: Buffer }>`select data from contact_import_chunks where import_id = ${importId} and seq = ${seq}`.execute(db);
  return rows[0]?.data;
}

/** uploading → queued; the caller adds the job in the same transaction. */
export async function markQueued(db: DbOrTx, importId: string, rowsTotal: number): Promise<ImportRecord> {
  const { rows } = await sql<ImportRecord>`update contact_imports set status = 'queued', rows_total = ${rowsTotal}
    where id = ${importId} and status = 'uploading' returning *`.execute(db);
  return rows[0]!;
}

export async function getImport(db: DbOrTx, workspaceId: string, id: string): Promise<ImportRecord> {
  const { rows } = await sql<ImportRecord>`select * from contact_imports where id = ${id} and workspace_id = ${workspaceId}`.execute(db);
  if (rows[0] === undefined) throw notFound('Import');
  return rows[0];
}

export async function listImports(db: DbOrTx, workspaceId: string, page: { limit: number; before: string | undefined }): Promise<ImportRecord[]> {
  const { rows } = await sql<ImportRecord>`select * from contact_imports where workspace_id = ${workspaceId}
    ${page.before !== undefined ? sql`and id < ${page.before}` : sql``}
    order by id desc limit ${page.limit + 1}`.execute(db);
  return rows;
}

export interface ImportErrorRow {
  row_number: number;
  field: string | null;
  reason: string;
}

/** The refused rows in file order, after row `after`. */
export async function listImportErrors(db: DbOrTx, importId: string, page: { limit: number; after: number }): Promise<ImportErrorRow[]> {
  const { rows } = await sql<ImportErrorRow>`select row_number, field, reason from contact_import_errors
    where import_id = ${importId} and row_number > ${page.after}
    order by row_number limit ${page.limit + 1}`.execute(db);
  return rows;
}

/**
 * queued → running (or running again after a crash): the import to work on,
 * or undefined when there is nothing to do (finished, or not uploaded).
 */
export async function startImport(db: DbOrTx, importId: string): Promise<ImportRecord | undefined> {
  const { rows } = await sql<ImportRecord>`update contact_imports set status = 'running'
    where id = ${importId} and status in ('queued', 'running') returning *`.execute(db);
  return rows[0];
}

/**
 * Finished: the chunks (the raw file, personal data) are deleted in the same
 * transaction. `rows_total` becomes the parsed count if the upload's count
 * differed (a file with bare CR line ends, for one).
 */
export async function finishImport(
  db: Db,
  importId: string,
  outcome: { status: 'completed' } | { status: 'failed'; error: string },
): Promise<ImportRecord | undefined> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<ImportRecord>`update contact_imports set status = ${outcome.status},
        error = ${outcome.status === 'failed' ? outcome.error : null},
        rows_total = case when ${outcome.status} = 'completed' then rows_done else greatest(rows_total, rows_done) end,
        finished_at = now()
      where id = ${importId} and status in ('queued', 'running') returning *`.execute(trx);
    if (rows[0] !== undefined) await sql`delete from contact_import_chunks where import_id = ${importId}`.execute(trx);
    return rows[0];
  });
}
