import { type RawBuilder, sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import { notFound, validationError } from '../shared/errors.ts';
import { isCountryCode } from '../shared/phone.ts';

/**
 * A campaign's audience: a static list or a segment (a filter over the
 * workspace's contacts, evaluated when the campaign starts).
 */
export interface AudienceRef {
  type: 'list' | 'segment';
  id: string;
}

/** {"countries": ["US"], "timezones": ["America/New_York"], "attributes": {"tier": ["gold", "silver"]}} — all conditions must hold. */
export interface SegmentFilter {
  countries?: string[];
  timezones?: string[];
  attributes?: Record<string, (string | number | boolean)[]>;
}

export function validateSegmentFilter(filter: SegmentFilter): SegmentFilter {
  for (const [i, c] of (filter.countries ?? []).entries()) {
    if (!isCountryCode(c)) throw validationError(`filter.countries.${i}`, 'must be an ISO 3166-1 alpha-2 code of a country with a numbering plan');
  }
  for (const [key, values] of Object.entries(filter.attributes ?? {})) {
    if (!Array.isArray(values) || values.length === 0) throw validationError(`filter.attributes.${key}`, 'must be a non-empty array of accepted values');
  }
  return filter;
}

function segmentCondition(filter: SegmentFilter): RawBuilder<unknown> {
  const parts: RawBuilder<unknown>[] = [sql`true`];
  if (filter.countries?.length) parts.push(sql`c.country = any(${filter.countries}::text[])`);
  if (filter.timezones?.length) parts.push(sql`c.timezone = any(${filter.timezones}::text[])`);
  for (const [key, values] of Object.entries(filter.attributes ?? {})) {
    // any of the accepted values: one containment test each (uses the GIN index)
    parts.push(sql`(${sql.join(values.map((v) => sql`c.attributes @> ${JSON.stringify({ [key]: v })}::jsonb`), sql` or `)})`);
  }
  return sql.join(parts, sql` and `);
}

/**
 * The audience's contacts as a subquery (`c.*` of contacts), in a stable
 * order (contact id). Throws a 404 when the list or segment is not the
 * workspace's.
 */
export async function audienceQuery(db: DbOrTx, workspaceId: string, ref: AudienceRef): Promise<RawBuilder<unknown>> {
  if (ref.type === 'list') {
    const { rows } = await sql`select 1 from contact_lists where id = ${ref.id} and workspace_id = ${workspaceId}`.execute(db);
    if (rows.length === 0) throw notFound('List');
    return sql`select c.* from contacts c join contact_list_members lm on lm.contact_id = c.id
      where lm.list_id = ${ref.id} and c.workspace_id = ${workspaceId}`;
  }
  const { rows } = await sql<{ filter: SegmentFilter }>`select filter from segments where id = ${ref.id} and workspace_id = ${workspaceId}`.execute(db);
  if (rows[0] === undefined) throw notFound('Segment');
  return sql`select c.* from contacts c where c.workspace_id = ${workspaceId} and ${segmentCondition(rows[0].filter)}`;
}
