import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import { notFound, validationError } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import type { PageRequest } from '../shared/pagination.ts';
import { audienceQuery, type SegmentFilter, validateSegmentFilter } from './audience.ts';
import type { ContactRow, WorkspaceScope } from './contacts.ts';
import { attributeKeyProblem, attributeValueProblem, timezoneProblem } from './contacts.ts';

/** Segments: a named filter over the workspace's contacts, evaluated live (see audience.ts for its meaning). */
export interface Segment {
  id: string;
  workspace_id: string;
  name: string;
  filter: SegmentFilter;
  created_at: string;
}

interface SegmentRow {
  id: string;
  workspace_id: string;
  name: string;
  filter: SegmentFilter;
  created_at: Date;
}

export function segmentRowToSegment(r: SegmentRow): Segment {
  return { id: r.id, workspace_id: r.workspace_id, name: r.name, filter: r.filter, created_at: r.created_at.toISOString() };
}

/** audience.ts's rules, plus real zones and sane attribute names (a typo would silently match nobody). */
export function checkSegmentFilter(filter: SegmentFilter): SegmentFilter {
  validateSegmentFilter(filter);
  for (const [i, tz] of (filter.timezones ?? []).entries()) {
    const reason = timezoneProblem(tz);
    if (reason !== undefined) throw validationError(`filter.timezones.${i}`, reason);
  }
  for (const [key, values] of Object.entries(filter.attributes ?? {})) {
    const reason = attributeKeyProblem(key);
    if (reason !== undefined) throw validationError(`filter.attributes.${key}`, reason);
    for (const [i, v] of values.entries()) {
      const problem = attributeValueProblem(v);
      if (problem !== undefined) throw validationError(`filter.attributes.${key}.${i}`, problem);
    }
  }
  return filter;
}

export async function createSegment(db: DbOrTx, scope: WorkspaceScope, input: { name: string; filter: SegmentFilter }): Promise<Segment> {
  const filter = checkSegmentFilter(input.filter);
  const { rows } = await sql<SegmentRow>`insert into segments (id, organization_id, workspace_id, name, filter)
    values (${newId('seg')}, ${scope.organizationId}, ${scope.workspaceId}, ${input.name}, ${JSON.stringify(filter)}::jsonb)
    returning id, workspace_id, name, filter, created_at`.execute(db);
  return segmentRowToSegment(rows[0]!);
}

export async function getSegment(db: DbOrTx, workspaceId: string, id: string): Promise<Segment> {
  const { rows } = await sql<SegmentRow>`select id, workspace_id, name, filter, created_at from segments
    where id = ${id} and workspace_id = ${workspaceId}`.execute(db);
  if (rows[0] === undefined) throw notFound('Segment');
  return segmentRowToSegment(rows[0]);
}

export async function listSegments(db: DbOrTx, workspaceId: string, page: PageRequest): Promise<SegmentRow[]> {
  const { rows } = await sql<SegmentRow>`select id, workspace_id, name, filter, created_at from segments
    where workspace_id = ${workspaceId} ${page.before !== undefined ? sql`and id < ${page.before}` : sql``}
    order by id desc limit ${page.limit + 1}`.execute(db);
  return rows;
}

/** How many contacts match now (the same query a campaign snapshots at start). */
export async function countSegment(db: DbOrTx, workspaceId: string, id: string): Promise<number> {
  const audience = await audienceQuery(db, workspaceId, { type: 'segment', id });
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from (${audience}) a`.execute(db);
  return rows[0]!.n;
}

/** A page of the matching contacts, newest first. */
export async function segmentContacts(db: DbOrTx, workspaceId: string, id: string, page: PageRequest): Promise<ContactRow[]> {
  const audience = await audienceQuery(db, workspaceId, { type: 'segment', id });
  const { rows } = await sql<ContactRow>`select a.* from (${audience}) a
    ${page.before !== undefined ? sql`where a.id < ${page.before}` : sql``}
    order by a.id desc limit ${page.limit + 1}`.execute(db);
  return rows;
}
