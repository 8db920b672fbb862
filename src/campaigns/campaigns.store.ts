import { sql } from 'kysely';
import type { DbOrTx, Tx } from '../db/db.ts';
import { CAMPAIGN_EVENTS, type CampaignEvent, type CampaignStatus } from './lifecycle.ts';

export interface CampaignRow {
  id: string;
  organization_id: string;
  workspace_id: string;
  name: string;
  body_template: string;
  purpose: 'transactional' | 'marketing' | 'appointment' | 'cart_recovery';
  audience_type: 'list' | 'segment';
  audience_id: string;
  from_number: string;
  scheduled_at: Date | null;
  throttle_mps: number | null;
  auto_resume: boolean;
  error_threshold: number | null;
  status: CampaignStatus;
  pause_reason: string | null;
  audience_size: number | null;
  cursor: number;
  /** A throttled campaign's next step may not run before this (advance.ts). */
  next_advance_at: Date | null;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  updated_at: Date;
}

const COLUMNS = sql`id, organization_id, workspace_id, name, body_template, purpose, audience_type, audience_id, from_number,
  scheduled_at, throttle_mps::float8 as throttle_mps, auto_resume, error_threshold::float8 as error_threshold, status,
  pause_reason, audience_size, cursor, next_advance_at, created_at, started_at, completed_at, updated_at`;

export type NewCampaign = Pick<
  CampaignRow,
  | 'id'
  | 'organization_id'
  | 'workspace_id'
  | 'name'
  | 'body_template'
  | 'purpose'
  | 'audience_type'
  | 'audience_id'
  | 'from_number'
  | 'scheduled_at'
  | 'throttle_mps'
  | 'auto_resume'
  | 'error_threshold'
>;

export async function insertCampaign(db: DbOrTx, c: NewCampaign, actor: string): Promise<CampaignRow> {
  const { rows } = await sql<CampaignRow>`
    with ins as (
      insert into campaigns (id, organization_id, workspace_id, name, body_template, purpose, audience_type, audience_id,
        from_number, scheduled_at, throttle_mps, auto_resume, error_threshold, status)
      values (${c.id}, ${c.organization_id}, ${c.workspace_id}, ${c.name}, ${c.body_template}, ${c.purpose}, ${c.audience_type},
        ${c.audience_id}, ${c.from_number}, ${c.scheduled_at}, ${c.throttle_mps}, ${c.auto_resume}, ${c.error_threshold}, 'draft')
      returning *
    ), ev as (
      insert into campaign_events (campaign_id, event, from_status, to_status, actor) select id, 'create', null, 'draft', ${actor} from ins
    )
    select ${COLUMNS} from ins`.execute(db);
  return rows[0]!;
}

export async function findCampaign(db: DbOrTx, id: string, options: { lock?: boolean } = {}): Promise<CampaignRow | undefined> {
  const { rows } = await sql<CampaignRow>`select ${COLUMNS} from campaigns where id = ${id} ${options.lock ? sql`for update` : sql``}`.execute(db);
  return rows[0];
}

export async function listCampaigns(
  db: DbOrTx,
  scope: { organizationId: string; workspaceId?: string },
  page: { limit: number; before: string | undefined },
): Promise<CampaignRow[]> {
  const { rows } = await sql<CampaignRow>`select ${COLUMNS} from campaigns
    where organization_id = ${scope.organizationId}
      ${scope.workspaceId ? sql`and workspace_id = ${scope.workspaceId}` : sql``}
      ${page.before ? sql`and id < ${page.before}` : sql``}
    order by id desc limit ${page.limit + 1}`.execute(db);
  return rows;
}

/**
 * Apply a lifecycle event: a conditional UPDATE (only from a legal source)
 * and its campaign_event, in one statement. Undefined when the campaign was
 * not in a state the event applies to.
 */
export async function applyCampaignEvent(
  trx: DbOrTx,
  id: string,
  event: CampaignEvent,
  options: {
    actor: string;
    reason?: string | null;
    set?: ReturnType<typeof sql>;
    /** Apply only to a campaign paused for this reason (checked again under the row lock: a pause that commits first wins). */
    pausedFor?: string;
  },
): Promise<CampaignRow | undefined> {
  const rule = CAMPAIGN_EVENTS[event];
  const { rows } = await sql<CampaignRow>`
    with old as (select id, status from campaigns where id = ${id} and status = any(${[...rule.from]}::text[])
      ${options.pausedFor === undefined ? sql`` : sql`and pause_reason = ${options.pausedFor}`} for update),
    upd as (
      update campaigns c set status = ${rule.to}, updated_at = now(),
        pause_reason = ${rule.to === 'paused' ? (options.reason ?? null) : null}
        ${options.set ? sql`, ${options.set}` : sql``}
      from old where c.id = old.id
      returning c.*, old.status as old_status
    ), ev as (
      insert into campaign_events (campaign_id, event, from_status, to_status, reason, actor)
      select id, ${event}, old_status, ${rule.to}, ${options.reason ?? null}, ${options.actor} from upd
    )
    select ${COLUMNS} from upd`.execute(trx);
  return rows[0];
}

export async function campaignEvents(db: DbOrTx, id: string) {
  const { rows } = await sql<{ event: string; from_status: string | null; to_status: string; reason: string | null; actor: string; at: Date }>`
    select event, from_status, to_status, reason, actor, at from campaign_events where campaign_id = ${id} order by seq`.execute(db);
  return rows;
}

/**
 * What a template may use of a contact `a`: its attributes, with the
 * standard fields (first_name, last_name, phone, locale) over them — the one
 * definition the snapshot, the quote and the preview share.
 */
export const contactVariables = (alias: string) =>
  sql`${sql.ref(`${alias}.attributes`)} || jsonb_strip_nulls(jsonb_build_object('first_name', ${sql.ref(`${alias}.first_name`)},
    'last_name', ${sql.ref(`${alias}.last_name`)}, 'phone', ${sql.ref(`${alias}.phone`)}, 'locale', ${sql.ref(`${alias}.locale`)}))`;

/** Number the audience: one row per contact, in contact-id order, with the fields the template may use. */
export async function snapshotRecipients(trx: Tx, campaignId: string, audience: ReturnType<typeof sql>): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    with ins as (
      insert into campaign_recipients (campaign_id, seq, contact_id, phone, timezone, variables)
      select ${campaignId}, row_number() over (order by a.id), a.id, a.phone, a.timezone,
        ${contactVariables('a')}
      from (${audience}) a
      on conflict do nothing
      returning 1
    )
    select count(*)::int as n from ins`.execute(trx);
  return rows[0]!.n;
}
