import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import type { MessageEvent, MessageStatus } from './states.ts';
import { sourcesOf, targetOf } from './states.ts';

export type Producer = 'api' | 'campaign' | 'appointment' | 'cart' | 'system';
export type Purpose = 'transactional' | 'marketing' | 'appointment' | 'cart_recovery';

export interface MessageRow {
  id: string;
  organization_id: string;
  workspace_id: string;
  dedupe_key: string;
  request_hash: string | null;
  producer: Producer;
  campaign_id: string | null;
  purpose: Purpose;
  to_number: string;
  country: string;
  from_number: string;
  body: string;
  encoding: 'GSM-7' | 'UCS-2';
  segments: number;
  cost: number;
  status: MessageStatus;
  status_reason: string | null;
  send_at: Date;
  next_attempt_at: Date | null;
  attempts: number;
  claimed_at: Date | null;
  lease_until: Date | null;
  reservation_id: string | null;
  provider_sid: string | null;
  provider_status: string | null;
  error_code: number | null;
  created_at: Date;
  updated_at: Date;
  sent_at: Date | null;
  terminal_at: Date | null;
  /** The recipient's own IANA zone when the producer knows it (a contact's zone). */
  recipient_timezone: string | null;
}

export type NewMessage = Pick<
  MessageRow,
  | 'id'
  | 'organization_id'
  | 'workspace_id'
  | 'dedupe_key'
  | 'request_hash'
  | 'producer'
  | 'campaign_id'
  | 'purpose'
  | 'to_number'
  | 'country'
  | 'from_number'
  | 'body'
  | 'encoding'
  | 'segments'
  | 'cost'
  | 'send_at'
> & { recipient_timezone?: string | null; status_reason?: string | null };

/**
 * Insert messages; a dedupe key already taken in the workspace inserts
 * nothing (the unique index is the guarantee, not a prior SELECT). Returns
 * the rows that were new, each with its `created` event written.
 */
export async function insertMessages(
  trx: DbOrTx,
  messages: readonly NewMessage[],
  status: MessageStatus = 'planned',
  /** NOTIFY this channel with the organization id when a row was inserted (in the same statement). */
  notify?: { channel: string; organizationId: string },
  /**
   * Insert in `(workspace_id, dedupe_key)` order: for batches that may hold
   * the same keys as another batch in flight (the API's intake), which would
   * otherwise deadlock taking them in opposite orders. A campaign's batch
   * (one campaign, under its lock) keeps its rows in id order instead.
   */
  keyOrder = false,
): Promise<MessageRow[]> {
  if (messages.length === 0) return [];
  const { rows } = await sql<MessageRow>`
    with ins as (
      insert into messages (id, organization_id, workspace_id, dedupe_key, request_hash, producer, campaign_id, purpose,
        to_number, country, from_number, body, encoding, segments, cost, send_at, recipient_timezone, status, status_reason, terminal_at)
      select x.id, x.organization_id, x.workspace_id, x.dedupe_key, x.request_hash, x.producer, x.campaign_id, x.purpose,
        x.to_number, x.country, x.from_number, x.body, x.encoding, x.segments, x.cost, x.send_at, x.recipient_timezone, ${status},
        x.status_reason, ${status === 'skipped' || status === 'failed' ? sql`now()` : sql`null`}
      from json_to_recordset(${JSON.stringify(messages)}::json) as x(id text, organization_id text, workspace_id text,
        dedupe_key text, request_hash text, producer text, campaign_id text, purpose text, to_number text, country text,
        from_number text, body text, encoding text, segments int, cost int, send_at timestamptz, recipient_timezone text, status_reason text)
      ${keyOrder ? sql`order by x.workspace_id, x.dedupe_key` : sql``}
      on conflict (workspace_id, dedupe_key) do nothing
      returning *
    ), ev as (
      insert into message_events (message_id, organization_id, event, from_status, to_status, reason)
      select id, organization_id, 'created', null, status, status_reason from ins
    )
    select ins.* ${notify ? sql`, (select pg_notify(${notify.channel}, ${notify.organizationId})) as notified` : sql``} from ins`.execute(trx);
  return rows;
}

export async function findByDedupeKey(db: DbOrTx, workspaceId: string, dedupeKey: string): Promise<MessageRow | undefined> {
  const { rows } = await sql<MessageRow>`select * from messages where workspace_id = ${workspaceId} and dedupe_key = ${dedupeKey}`.execute(db);
  return rows[0];
}

export async function findMessage(db: DbOrTx, id: string): Promise<MessageRow | undefined> {
  const { rows } = await sql<MessageRow>`select * from messages where id = ${id}`.execute(db);
  return rows[0];
}

export async function findMessages(db: DbOrTx, ids: readonly string[]): Promise<MessageRow[]> {
  if (ids.length === 0) return [];
  const { rows } = await sql<MessageRow>`select * from messages where id = any(${[...ids]}::text[])`.execute(db);
  return rows;
}

/**
 * `<alias>.status = any(statuses)` for a statement that finds its messages
 * by id. Written as `(…) is true` so that the planner cannot prove a
 * status-partial index's predicate from it (`messages_due`,
 * `messages_in_flight`, …) and finds the rows through the primary key.
 * Otherwise, while the table's statistics still say a status is rare (just
 * after a campaign created 100,000 messages), it may scan the whole partial
 * index and filter it by id: a cost that grows with the backlog, paid by
 * every batch.
 */
export const statusOfListed = (alias: string, statuses: readonly MessageStatus[]) =>
  sql`(${sql.ref(`${alias}.status`)} = any(${[...statuses]}::text[])) is true`;

/** What a transition may change besides the status (absent = unchanged, null = cleared). */
export interface Patch {
  reason?: string | null;
  next_attempt_at?: string | null;
  reservation_id?: string | null;
  provider_sid?: string | null;
  provider_status?: string | null;
  error_code?: number | null;
  lease_until?: string | null;
  /** event details, stored on the message_event only */
  details?: Record<string, unknown>;
  /** apply only if the message is still on this attempt (an outcome of attempt n never moves attempt n+1) */
  expect_attempts?: number;
  /** apply only if the message has no carrier id yet, or this one (a carrier report names its message) */
  expect_sid?: string;
  /**
   * The claim's attempt never reached the carrier (the breaker was open, or
   * the message was withdrawn before the call): it is given back, so that
   * `attempts` counts carrier calls and the retry limit and backoff see
   * only those.
   */
  uncount_attempt?: true;
}

const PATCHABLE = ['next_attempt_at', 'reservation_id', 'provider_sid', 'provider_status', 'error_code', 'lease_until'] as const;

/**
 * Apply one event to many messages: a conditional UPDATE (only rows whose
 * current status is a legal source of the event move) and the matching
 * message_events, in one statement. Returns the ids that moved, with the
 * status each moved from.
 */
export async function applyEvent(
  trx: DbOrTx,
  event: MessageEvent,
  items: readonly { id: string; patch?: Patch }[],
  options: {
    /** Narrow the legal sources further (a subset of the event's). */
    onlyFrom?: readonly MessageStatus[];
    /** Leave out messages another transaction holds, instead of waiting for them (the caller deals with those). */
    skipLocked?: boolean;
  } = {},
): Promise<{ id: string; from_status: MessageStatus; organization_id: string }[]> {
  if (items.length === 0) return [];
  const to = targetOf(event);
  const from = sourcesOf(event).filter((s) => options.onlyFrom === undefined || options.onlyFrom.includes(s));
  // Two arrays, not one JSON document: the planner knows how many rows an
  // array unnests to (a JSON array always counts as 100), and with 100 rows
  // against a young table it would rather scan the table than look each up.
  const ids = items.map((i) => i.id);
  const patches = items.map((i) => JSON.stringify(i.patch ?? {}));
  const set = PATCHABLE.map(
    (f) => sql`${sql.ref(f)} = case when p ? ${f} then ${castFor(f, sql`p->>${f}`)} else m.${sql.ref(f)} end`,
  );
  const terminal = ['delivered', 'undelivered', 'skipped', 'failed'].includes(to);
  const { rows } = await sql<{ id: string; from_status: MessageStatus; organization_id: string }>`
    with input as (
      select * from unnest(${ids}::text[], ${patches}::jsonb[]) as input(id, p)
    ), old as (
      select m.id, m.status from messages m join input on input.id = m.id
      -- the ids again, as an index condition: a join alone leaves the planner free
      -- to read the whole primary key when it thinks the table small
      where m.id = any(${ids}::text[]) and ${statusOfListed('m', from)}
        and (not (input.p ? 'expect_attempts') or m.attempts = (input.p->>'expect_attempts')::int)
        and (not (input.p ? 'expect_sid') or m.provider_sid is null or m.provider_sid = input.p->>'expect_sid')
        -- a carrier id another message holds is not this one's: left out (the unique
        -- index would otherwise fail the whole statement, every message in it)
        and (not (input.p ? 'provider_sid') or m.provider_sid is not distinct from input.p->>'provider_sid'
          or not exists (select 1 from messages o where o.provider_sid = input.p->>'provider_sid'))
      for update of m ${options.skipLocked ? sql`skip locked` : sql``}
    ), upd as (
      update messages m set
        status = ${to},
        status_reason = case when p ? 'reason' then p->>'reason' else m.status_reason end,
        ${sql.join(set, sql`, `)},
        attempts = case when p ? 'uncount_attempt' then greatest(m.attempts - 1, 0) else m.attempts end,
        sent_at = ${to === 'sent' ? sql`coalesce(m.sent_at, now())` : sql`m.sent_at`},
        terminal_at = ${terminal ? sql`coalesce(m.terminal_at, now())` : sql`m.terminal_at`},
        updated_at = now()
      from old join input on input.id = old.id
      where m.id = old.id
      returning m.id, m.organization_id, old.status as from_status, input.p as p
    ), ev as (
      insert into message_events (message_id, organization_id, event, from_status, to_status, reason, details)
      select id, organization_id, ${event}, from_status, ${to}, p->>'reason', p->'details' from upd
    )
    select id, from_status, organization_id from upd`.execute(trx);
  return rows;
}

function castFor(field: (typeof PATCHABLE)[number], value: ReturnType<typeof sql>) {
  switch (field) {
    case 'next_attempt_at':
    case 'lease_until':
      return sql`(${value})::timestamptz`;
    case 'error_code':
      return sql`(${value})::int`;
    default:
      return value;
  }
}

export interface EventRow {
  seq: number;
  event: string;
  from_status: string | null;
  to_status: string;
  reason: string | null;
  details: unknown;
  at: Date;
}

export async function listEvents(db: DbOrTx, messageId: string): Promise<EventRow[]> {
  const { rows } = await sql<EventRow>`select seq, event, from_status, to_status, reason, details, at
    from message_events where message_id = ${messageId} order by seq`.execute(db);
  return rows;
}

export interface MessageFilter {
  statuses?: MessageStatus[];
  purposes?: Purpose[];
  campaignId?: string;
  to?: string;
  from?: Date;
  until?: Date;
}

export async function listMessages(
  db: DbOrTx,
  workspaceIds: { organizationId: string; workspaceId?: string },
  filter: MessageFilter,
  page: { limit: number; before: string | undefined },
): Promise<MessageRow[]> {
  const { rows } = await sql<MessageRow>`select * from messages
    where organization_id = ${workspaceIds.organizationId}
      ${workspaceIds.workspaceId ? sql`and workspace_id = ${workspaceIds.workspaceId}` : sql``}
      ${filter.statuses?.length ? sql`and status = any(${filter.statuses}::text[])` : sql``}
      ${filter.purposes?.length ? sql`and purpose = any(${filter.purposes}::text[])` : sql``}
      ${filter.campaignId ? sql`and campaign_id = ${filter.campaignId}` : sql``}
      ${filter.to ? sql`and to_number = ${filter.to}` : sql``}
      ${filter.from ? sql`and created_at >= ${filter.from}` : sql``}
      ${filter.until ? sql`and created_at < ${filter.until}` : sql``}
      ${page.before ? sql`and id < ${page.before}` : sql``}
    order by id desc limit ${page.limit + 1}`.execute(db);
  return rows;
}
