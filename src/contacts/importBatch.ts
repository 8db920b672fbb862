import { sql } from 'kysely';
import { appendConsentEvents, type NewConsentEvent, validateConsent } from '../consent/index.ts';
import type { Db, Tx } from '../db/db.ts';
import { newId } from '../shared/ids.ts';
import { type ContactValues, groupByPhone, type ImportRow, type RowError } from './importRows.ts';
import type { ImportRecord } from './imports.store.ts';

/**
 * One batch of an import, written in one transaction with the progress that
 * covers it: contacts upserted (existing ones merged), list memberships,
 * consent events, error rows, and `rows_done` moved past the batch. A rerun
 * after a crash skips rows at or below `rows_done`, so nothing is written
 * twice; the import row is locked and its `rows_done` checked first, so two
 * runners cannot both write the same batch.
 */
export interface Batch {
  /** Data rows before this batch (the expected `rows_done`). */
  before: number;
  /** Data rows in this batch, valid or not. */
  size: number;
  valid: ImportRow[];
  invalid: RowError[];
}

export type BatchResult = { outcome: 'written'; record: ImportRecord } | { outcome: 'stale'; rowsDone: number };

export async function writeBatch(db: Db, imp: ImportRecord, batch: Batch): Promise<BatchResult> {
  return db.transaction().execute(async (trx) => {
    const { rows: locked } = await sql<{ rows_done: number; status: string }>`select rows_done, status from contact_imports
      where id = ${imp.id} for update`.execute(trx);
    const current = locked[0];
    if (current === undefined || current.status !== 'running' || current.rows_done !== batch.before) {
      return { outcome: 'stale', rowsDone: current?.rows_done ?? -1 };
    }

    const { valid, invalid } = await withoutErasedSince(trx, imp, batch);
    // phone order: concurrent batches touching the same contacts lock them in one order
    const groups = groupByPhone(valid).sort((a, b) => (a.contact.phone < b.contact.phone ? -1 : 1));
    const proposed = groups.map(() => newId('ct'));
    const column = <K extends keyof ContactValues>(key: K) => groups.map((g) => g.contact[key]);
    let imported = 0;
    let merged = 0;
    const contactIds: string[] = [];
    if (groups.length > 0) {
      // one array per column rather than keyed JSON objects: a third of the bytes to build and send
      const { rows } = await sql<{ id: string; phone: string }>`
        insert into contacts (id, organization_id, workspace_id, phone, country, first_name, last_name, timezone, locale, attributes)
        select x.id, ${imp.organization_id}, ${imp.workspace_id}, x.phone, x.country, x.first_name, x.last_name, x.timezone, x.locale,
          x.attributes
        from rows from (unnest(${proposed}::text[]), unnest(${column('phone')}::text[]), unnest(${column('country')}::text[]),
          unnest(${column('first_name')}::text[]), unnest(${column('last_name')}::text[]), unnest(${column('timezone')}::text[]),
          unnest(${column('locale')}::text[]), jsonb_array_elements(${JSON.stringify(column('attributes'))}::jsonb))
          as x(id, phone, country, first_name, last_name, timezone, locale, attributes)
        on conflict (workspace_id, phone) do update set
          first_name = coalesce(excluded.first_name, contacts.first_name),
          last_name = coalesce(excluded.last_name, contacts.last_name),
          timezone = coalesce(excluded.timezone, contacts.timezone),
          locale = coalesce(excluded.locale, contacts.locale),
          attributes = contacts.attributes || excluded.attributes,
          updated_at = now()
        returning id, phone`.execute(trx);
      const idByPhone = new Map(rows.map((r) => [r.phone, r.id]));
      for (const [i, g] of groups.entries()) {
        const id = idByPhone.get(g.contact.phone)!;
        contactIds.push(id);
        // the proposed id came back: this batch created the contact; its other rows merged into it
        const created = id === proposed[i];
        imported += created ? 1 : 0;
        merged += g.rows - (created ? 1 : 0);
      }
    }

    if (imp.list_id !== null && contactIds.length > 0) {
      await sql`insert into contact_list_members (list_id, contact_id)
        select ${imp.list_id}, id from unnest(${contactIds}::text[]) as x(id) on conflict do nothing`.execute(trx);
    }

    const events = await withoutOverriddenOptOuts(trx, imp.workspace_id, consentEvents(imp, valid));
    await appendConsentEvents(trx, events);

    if (invalid.length > 0) {
      await sql`insert into contact_import_errors (import_id, row_number, field, reason)
        select ${imp.id}, x.row, x.field, x.reason from jsonb_to_recordset(${JSON.stringify(invalid)}::jsonb)
          as x(row int, field text, reason text)
        on conflict do nothing`.execute(trx);
    }

    const { rows: updated } = await sql<ImportRecord>`update contact_imports set
        rows_done = rows_done + ${batch.size},
        rows_imported = rows_imported + ${imported},
        rows_merged = rows_merged + ${merged},
        rows_invalid = rows_invalid + ${invalid.length},
        consents_recorded = consents_recorded + ${events.length}
      where id = ${imp.id} returning *`.execute(trx);
    return { outcome: 'written', record: updated[0]! };
  });
}

/** The reason of a row whose number was erased after its file was uploaded. */
export const ERASED_SINCE_UPLOAD = 'was erased (GDPR) after this file was uploaded: not imported';

/**
 * Rows about numbers erased after the import was uploaded are not written:
 * the file predates the erasure, and writing them would bring the person's
 * contact (and an imported consent) back. Each is refused with its row
 * number instead. An erasure leaves its mark in the consent log (every
 * purpose revoked by `privacy_erasure`, under the number's hash), and that
 * is what is looked for. A file uploaded after the erasure is new data and
 * is imported as usual.
 */
async function withoutErasedSince(trx: Tx, imp: ImportRecord, batch: Batch): Promise<{ valid: ImportRow[]; invalid: RowError[] }> {
  if (batch.valid.length === 0) return batch;
  const { rows } = await sql<{ phone: string }>`
    select distinct x.phone from unnest(${[...new Set(batch.valid.map((r) => r.phone))]}::text[]) as x(phone)
    join consent_events e on e.workspace_id = ${imp.workspace_id} and e.phone_hash = credence_phone_hash(x.phone)
    where e.actor = 'privacy_erasure' and e.action = 'revoked' and e.occurred_at >= ${imp.created_at}`.execute(trx);
  if (rows.length === 0) return batch;
  const erased = new Set(rows.map((r) => r.phone));
  return {
    valid: batch.valid.filter((r) => !erased.has(r.phone)),
    invalid: [
      ...batch.invalid,
      ...batch.valid.filter((r) => erased.has(r.phone)).map((r) => ({ row: r.row, field: 'phone', reason: ERASED_SINCE_UPLOAD })),
    ],
  };
}

/**
 * The consent a row states, one event per purpose, in file order (a later
 * row about the same number is recorded after, so it wins). The file is the
 * client's record of consent given before: no double opt-in prompt is sent.
 */
function consentEvents(imp: ImportRecord, rows: readonly ImportRow[]): NewConsentEvent[] {
  const events: NewConsentEvent[] = [];
  for (const r of rows) {
    for (const action of ['granted', 'revoked'] as const) {
      const purposes = r.consents.filter((c) => c.action === action).map((c) => c.purpose);
      if (purposes.length === 0) continue;
      const valid = validateConsent(
        { phone: r.phone, purposes, action, source: 'import', evidence: { import_id: imp.id, row_number: r.row } },
        `row ${r.row}: `,
      );
      for (const purpose of valid.purposes) {
        events.push({
          organization_id: imp.organization_id,
          workspace_id: imp.workspace_id,
          phone: valid.phone,
          purpose,
          action,
          source: 'import',
          evidence: valid.evidence ?? {},
          actor: imp.created_by,
        });
      }
    }
  }
  return events;
}

/**
 * A file is the client's record, often older than what the person told us
 * directly: an imported grant never overrides a STOP the person sent (or a
 * carrier opt-out). Those grants are dropped; a new checkout form or a
 * START from the person is what restores consent.
 */
async function withoutOverriddenOptOuts(trx: Tx, workspaceId: string, events: NewConsentEvent[]): Promise<NewConsentEvent[]> {
  const grants = events.filter((e) => e.action === 'granted');
  if (grants.length === 0) return events;
  const { rows } = await sql<{ phone: string; purpose: string }>`
    select distinct x.phone, e.purpose from unnest(${[...new Set(grants.map((g) => g.phone))]}::text[]) as x(phone)
    join consent_events e on e.workspace_id = ${workspaceId} and e.phone_hash = credence_phone_hash(x.phone)
    where e.action = 'revoked' and e.source in ('inbound_sms', 'carrier_opt_out')`.execute(trx);
  const optedOut = new Set(rows.map((r) => `${r.phone}|${r.purpose}`));
  return events.filter((e) => e.action !== 'granted' || !optedOut.has(`${e.phone}|${e.purpose}`));
}
