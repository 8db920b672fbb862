import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import { DomainError, notFound } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import type { PageRequest } from '../shared/pagination.ts';
import {
  type AttributeValue,
  type Contact,
  type ContactFields,
  type ContactRow,
  contactRowToContact,
  validateContactFields,
  type WorkspaceScope,
} from './contacts.ts';

/** Contacts' SQL. Every statement filters by the workspace: another tenant's contact does not exist here. */

export interface NewContact extends Omit<ContactFields, 'attributes'> {
  /** E.164, already validated */
  phone: string;
  country: string;
  attributes?: Record<string, AttributeValue>;
}

export async function createContact(db: DbOrTx, scope: WorkspaceScope, input: NewContact): Promise<Contact> {
  validateContactFields(input);
  const { rows } = await sql<ContactRow>`
    insert into contacts (id, organization_id, workspace_id, phone, country, first_name, last_name, timezone, locale, attributes)
    values (${newId('ct')}, ${scope.organizationId}, ${scope.workspaceId}, ${input.phone}, ${input.country},
      ${input.first_name ?? null}, ${input.last_name ?? null}, ${input.timezone ?? null}, ${input.locale ?? null},
      ${JSON.stringify(input.attributes ?? {})}::jsonb)
    on conflict (workspace_id, phone) do nothing
    returning *`.execute(db);
  if (rows[0] !== undefined) return contactRowToContact(rows[0]);
  const existing = await sql<{ id: string }>`select id from contacts where workspace_id = ${scope.workspaceId} and phone = ${input.phone}`.execute(db);
  throw new DomainError('conflict', `A contact with phone ${input.phone} already exists in this workspace.`, {
    extra: { contact_id: existing.rows[0]?.id ?? null },
  });
}

export async function getContact(db: DbOrTx, workspaceId: string, id: string): Promise<Contact> {
  const { rows } = await sql<ContactRow>`select * from contacts where id = ${id} and workspace_id = ${workspaceId}`.execute(db);
  if (rows[0] === undefined) throw notFound('Contact');
  return contactRowToContact(rows[0]);
}

/**
 * Partial update: a field left out is kept, a field set to null is cleared;
 * attributes are merged, and an attribute set to null is removed.
 */
export async function updateContact(db: DbOrTx, workspaceId: string, id: string, patch: ContactFields): Promise<Contact> {
  validateContactFields(patch);
  const keep = (field: 'first_name' | 'last_name' | 'timezone' | 'locale') =>
    patch[field] === undefined ? sql.ref(field) : sql`${patch[field]}::text`;
  const attributes = Object.entries(patch.attributes ?? {});
  const set = Object.fromEntries(attributes.filter(([, v]) => v !== null));
  const removed = attributes.filter(([, v]) => v === null).map(([k]) => k);
  const { rows } = await sql<ContactRow>`
    update contacts set
      first_name = ${keep('first_name')}, last_name = ${keep('last_name')},
      timezone = ${keep('timezone')}, locale = ${keep('locale')},
      attributes = (attributes || ${JSON.stringify(set)}::jsonb) - ${removed}::text[],
      updated_at = now()
    where id = ${id} and workspace_id = ${workspaceId}
    returning *`.execute(db);
  if (rows[0] === undefined) throw notFound('Contact');
  return contactRowToContact(rows[0]);
}

/**
 * Delete a contact; its list memberships go with it (FK cascade). Campaign
 * recipients already snapshotted keep their copy (no FK on purpose), and the
 * consent log, keyed by the number, is untouched.
 */
export async function deleteContact(db: DbOrTx, workspaceId: string, id: string): Promise<void> {
  const r = await sql`delete from contacts where id = ${id} and workspace_id = ${workspaceId}`.execute(db);
  if (Number(r.numAffectedRows ?? 0) === 0) throw notFound('Contact');
}

export interface ContactFilter {
  phone?: string;
  country?: string;
  listId?: string;
}

/** Newest first (ids sort by creation time); `limit + 1` rows for `toPage`. */
export async function listContacts(db: DbOrTx, workspaceId: string, filter: ContactFilter, page: PageRequest): Promise<ContactRow[]> {
  if (filter.listId !== undefined) await requireList(db, workspaceId, filter.listId);
  const { rows } = await sql<ContactRow>`select c.* from contacts c
    where c.workspace_id = ${workspaceId}
      ${filter.phone !== undefined ? sql`and c.phone = ${filter.phone}` : sql``}
      ${filter.country !== undefined ? sql`and c.country = ${filter.country}` : sql``}
      ${filter.listId !== undefined
        ? sql`and exists (select 1 from contact_list_members m where m.list_id = ${filter.listId} and m.contact_id = c.id)`
        : sql``}
      ${page.before !== undefined ? sql`and c.id < ${page.before}` : sql``}
    order by c.id desc limit ${page.limit + 1}`.execute(db);
  return rows;
}

/** 404 unless the list is the workspace's. */
export async function requireList(db: DbOrTx, workspaceId: string, listId: string): Promise<void> {
  const { rows } = await sql`select 1 from contact_lists where id = ${listId} and workspace_id = ${workspaceId}`.execute(db);
  if (rows.length === 0) throw notFound('List');
}
