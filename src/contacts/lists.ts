import { sql } from 'kysely';
import type { Db, DbOrTx } from '../db/db.ts';
import { notFound, validationError } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import type { PageRequest } from '../shared/pagination.ts';
import type { WorkspaceScope } from './contacts.ts';
import { requireList } from './contacts.store.ts';

/**
 * Static lists of contacts. Membership rows carry no workspace, so every
 * write checks here that the list and each contact are the workspace's.
 */
export interface ContactList {
  id: string;
  workspace_id: string;
  name: string;
  member_count: number;
  created_at: string;
}

interface ListRow {
  id: string;
  workspace_id: string;
  name: string;
  member_count: number;
  created_at: Date;
}

export const MAX_MEMBERS_PER_REQUEST = 10_000;

export function listRowToList(r: ListRow): ContactList {
  return { id: r.id, workspace_id: r.workspace_id, name: r.name, member_count: r.member_count, created_at: r.created_at.toISOString() };
}

const withCount = sql`l.id, l.workspace_id, l.name, l.created_at,
  (select count(*)::int from contact_list_members m where m.list_id = l.id) as member_count`;

export async function createList(db: DbOrTx, scope: WorkspaceScope, name: string): Promise<ContactList> {
  const { rows } = await sql<ListRow>`insert into contact_lists (id, organization_id, workspace_id, name)
    values (${newId('lst')}, ${scope.organizationId}, ${scope.workspaceId}, ${name})
    returning id, workspace_id, name, created_at, 0 as member_count`.execute(db);
  return listRowToList(rows[0]!);
}

export async function getList(db: DbOrTx, workspaceId: string, id: string): Promise<ContactList> {
  const { rows } = await sql<ListRow>`select ${withCount} from contact_lists l where l.id = ${id} and l.workspace_id = ${workspaceId}`.execute(db);
  if (rows[0] === undefined) throw notFound('List');
  return listRowToList(rows[0]);
}

export async function listLists(db: DbOrTx, workspaceId: string, page: PageRequest): Promise<ListRow[]> {
  const { rows } = await sql<ListRow>`select ${withCount} from contact_lists l
    where l.workspace_id = ${workspaceId} ${page.before !== undefined ? sql`and l.id < ${page.before}` : sql``}
    order by l.id desc limit ${page.limit + 1}`.execute(db);
  return rows;
}

/**
 * The first id (by position) that is not a contact of the workspace, as a
 * 422 naming `contact_ids.N`; nothing is written when one is found.
 */
async function requireContacts(db: DbOrTx, workspaceId: string, ids: readonly string[]): Promise<void> {
  const { rows } = await sql<{ i: number }>`select (x.i - 1)::int as i from unnest(${ids}::text[]) with ordinality as x(id, i)
    where not exists (select 1 from contacts c where c.id = x.id and c.workspace_id = ${workspaceId})
    order by x.i limit 1`.execute(db);
  if (rows[0] !== undefined) throw validationError(`contact_ids.${rows[0].i}`, 'is not a contact of this workspace');
}

/** Add contacts to a list: all or none; adding a member twice is a no-op. */
export async function addMembers(db: Db, workspaceId: string, listId: string, contactIds: readonly string[]): Promise<{ added: number; list: ContactList }> {
  return db.transaction().execute(async (trx) => {
    await requireList(trx, workspaceId, listId);
    await requireContacts(trx, workspaceId, contactIds);
    const r = await sql`insert into contact_list_members (list_id, contact_id)
      select ${listId}, id from unnest(${[...new Set(contactIds)]}::text[]) as x(id)
      on conflict do nothing`.execute(trx);
    return { added: Number(r.numAffectedRows ?? 0), list: await getList(trx, workspaceId, listId) };
  });
}

/** Remove contacts from a list; ids that are not members are ignored (idempotent). */
export async function removeMembers(db: DbOrTx, workspaceId: string, listId: string, contactIds: readonly string[]): Promise<{ removed: number; list: ContactList }> {
  await requireList(db, workspaceId, listId);
  const r = await sql`delete from contact_list_members where list_id = ${listId} and contact_id = any(${contactIds}::text[])`.execute(db);
  return { removed: Number(r.numAffectedRows ?? 0), list: await getList(db, workspaceId, listId) };
}
