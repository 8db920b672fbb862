import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { codeOf, type Db, type DbOrTx } from '../db/db.ts';
import { createBatcher } from '../shared/batcher.ts';
import { addJob } from '../jobs/enqueue.ts';
import { DomainError, validationError } from '../shared/errors.ts';
import { parseDateTime } from '../shared/dates.ts';
import { newId } from '../shared/ids.ts';
import * as store from './messages.store.ts';
import { type NumberType, type ParsedPhone, parsePhone } from './phone.ts';
import { allowedCountries, checkNumber } from '../sendrules/numberSafety.ts';
import { validZone } from '../sendrules/timezones.ts';
import { messageCost, type PriceList } from './pricing.ts';
import { countSegments } from './segments.ts';
import { wakeDispatcher } from './dispatcher.ts';
import { inTransaction } from '../credits/index.ts';
import { resolveSender } from './senders.ts';

export const MAX_BODY = 1600;
export const PURPOSES: readonly store.Purpose[] = ['transactional', 'marketing', 'appointment', 'cart_recovery'];

export interface Priced {
  to: string;
  type: NumberType;
  country: string;
  encoding: 'GSM-7' | 'UCS-2';
  segments: number;
  cost: number;
}

/**
 * Characters as PostgreSQL's `length()` and the API schema count them (code
 * points), not UTF-16 units: an emoji is one character (and two UCS-2 units
 * in its segments, which is another count).
 */
export function characterCount(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** The first `max` characters (code points): a cut never splits a surrogate pair. */
export function truncateCharacters(text: string, max: number): string {
  if (text.length <= max) return text;
  return Array.from(text).slice(0, max).join('');
}

/** Validate and price one message (pure apart from the inputs). Throws a 422 naming the field. */
export function priceMessage(to: string, body: string, priceList: PriceList | undefined): Priced {
  if (body.length === 0) throw validationError('body', 'must not be empty');
  if (body.length > MAX_BODY) {
    const characters = characterCount(body);
    if (characters > MAX_BODY) throw validationError('body', `must be at most ${MAX_BODY} characters, got ${characters}`);
  }
  const phone = parsePhone(to);
  if (!phone.ok) throw validationError('to', phone.reason);
  return pricePhone(phone, body, priceList);
}

/** The price of a body to a number already parsed (and found valid). */
export function pricePhone(phone: Extract<ParsedPhone, { ok: true }>, body: string, priceList: PriceList | undefined): Priced {
  const seg = countSegments(body);
  return {
    to: phone.e164,
    type: phone.type,
    country: phone.country,
    encoding: seg.encoding,
    segments: seg.segments,
    cost: messageCost(seg.segments, phone.country, priceList),
  };
}

/** The workspace's country allow-list and home country (what `allowedCountries` reads). */
export async function workspaceCountries(db: DbOrTx, workspaceId: string): Promise<{ allowed_countries: string[] | null; home_country: string }> {
  const { rows } = await sql<{ allowed_countries: string[] | null; home_country: string }>`
    select allowed_countries, home_country from workspaces where id = ${workspaceId}`.execute(db);
  return rows[0] ?? { allowed_countries: null, home_country: 'US' };
}

/** Forget cached lookups of a workspace (after its sending rules change in this process). */
export function forgetWorkspace(workspaceId: string): void {
  cache.delete(`ws:${workspaceId}`);
}

export async function organizationPriceList(db: DbOrTx, organizationId: string): Promise<PriceList | undefined> {
  const { rows } = await sql<{ price_list: PriceList | null }>`select price_list from organizations where id = ${organizationId}`.execute(db);
  return rows[0]?.price_list ?? undefined;
}

/**
 * Per-process cache of slow-changing intake lookups (price lists, default
 * senders), so the hot path of POST /v1/messages is one statement. A change
 * takes effect within `CACHE_TTL_MS`; the claim step re-checks the sender's
 * rate row anyway.
 */
const CACHE_TTL_MS = 10_000;
const cache = new Map<string, { at: number; value: unknown }>();
async function cached<T>(key: string, load: () => Promise<T>): Promise<T> {
  const hit = cache.get(key);
  if (hit !== undefined && Date.now() - hit.at < CACHE_TTL_MS) return hit.value as T;
  const value = await load();
  if (cache.size > 10_000) cache.clear();
  cache.set(key, { at: Date.now(), value });
  return value;
}

/** Wake the organization's dispatcher (in the caller's transaction). */
export async function scheduleDispatch(trx: DbOrTx, organizationId: string, options: { includeBlocked?: boolean; runAt?: Date } = {}): Promise<void> {
  const runAt = options.runAt !== undefined && options.runAt.getTime() > Date.now() ? options.runAt : undefined;
  await addJob(
    trx,
    'dispatch',
    { organizationId, includeBlocked: options.includeBlocked ?? false },
    runAt === undefined
      ? { jobKey: `dispatch:${organizationId}${options.includeBlocked ? ':blocked' : ''}`, jobKeyMode: 'replace', maxAttempts: 25 }
      : { runAt, maxAttempts: 25 },
  );
}

export interface ApiMessageInput {
  to: string;
  body: string;
  purpose: store.Purpose;
  from?: string;
  send_at?: string;
  /** the recipient's IANA zone, when the caller knows it (quiet hours) */
  timezone?: string;
}

export interface Intake {
  message: store.MessageRow;
  /** False when the idempotency key returned an existing message. */
  created: boolean;
}

function requestHash(input: ApiMessageInput): string {
  return createHash('sha256')
    .update(JSON.stringify([input.to, input.body, input.purpose, input.from ?? null, input.send_at ?? null, ...(input.timezone === undefined ? [] : [input.timezone])]))
    .digest('hex');
}

/** SQLSTATEs after which an intake batch is written again row by row: data exceptions, deadlock, serialization failure. */
const ROW_BY_ROW = /^(22|40P01$|40001$)/;

/** Stores one new `planned` message; undefined when its dedupe key is taken. */
export type MessageInserter = (row: store.NewMessage) => Promise<store.MessageRow | undefined>;

/**
 * The API's inserts of immediate messages, gathered: the requests that
 * arrive while earlier inserts are being written go in one statement and
 * one commit (see shared/batcher.ts), each answered after that commit. A
 * dedupe key taken twice in one batch inserts the first; the other request
 * then finds it, as it would a concurrent one.
 */
export function createIntakeBatcher(db: Db, options: { maxBatch?: number } = {}): { insert: MessageInserter; close(): Promise<void> } {
  const batcher = createBatcher<store.NewMessage, store.MessageRow | undefined>(
    async (rows) => {
      try {
        const inserted = new Map((await store.insertMessages(db, rows, 'planned', undefined, true)).map((r) => [r.id, r]));
        return rows.map((r) => ({ value: inserted.get(r.id) }));
      } catch (err) {
        if (rows.length === 1 || !ROW_BY_ROW.test(codeOf(err) ?? '')) throw err;
        // One request's value the database refuses (class 22), or a deadlock with another batch
        // (40P01): the batch rolled back whole. Each row alone, so that only a bad one fails,
        // not up to 200 requests of any tenant that happened to share its statement.
        return Promise.all(
          rows.map((r) =>
            store.insertMessages(db, [r], 'planned').then(
              ([row]) => ({ value: row }),
              (error: unknown) => ({ error }),
            ),
          ),
        );
      }
    },
    { maxBatch: options.maxBatch ?? 200 },
  );
  return { insert: (row) => batcher.submit(row), close: () => batcher.close() };
}

/**
 * POST /v1/messages: validate, price, store as `planned` with its dedupe key,
 * and wake the dispatcher, all in one transaction. Nothing is stored when the
 * input is invalid. The same idempotency key returns the same message; with a
 * different request, it is a conflict.
 */
export async function createApiMessage(
  db: DbOrTx,
  scope: { organizationId: string; workspaceId: string },
  input: ApiMessageInput,
  idempotencyKey: string | undefined,
  /**
   * How an immediate message is stored (the API passes its batcher; default
   * one INSERT of its own), and what it waits for first (the API's flow
   * control, admission.ts).
   */
  immediate: { insert?: MessageInserter; admit?: (organizationId: string) => Promise<() => void> } = {},
): Promise<Intake> {
  if (!PURPOSES.includes(input.purpose)) throw validationError('purpose', `must be one of ${PURPOSES.join(', ')}`);
  let sendAt = new Date();
  if (input.send_at !== undefined) {
    sendAt = parseDateTime('send_at', input.send_at);
    if (sendAt.getTime() > Date.now() + 366 * 86_400_000) throw validationError('send_at', 'must be within a year');
  }
  if (idempotencyKey !== undefined && (idempotencyKey.length < 1 || idempotencyKey.length > 255)) {
    throw validationError('Idempotency-Key', 'must be 1 to 255 characters');
  }
  const hash = requestHash(input);
  const priceList = await cached(`price:${scope.organizationId}`, () => organizationPriceList(db, scope.organizationId));
  const priced = priceMessage(input.to, input.body, priceList);
  // Number safety, before anything is stored or reserved (re-checked at claim: the allow-list may change).
  const ws = await cached(`ws:${scope.workspaceId}`, () => workspaceCountries(db, scope.workspaceId));
  const safety = checkNumber({ e164: priced.to, country: priced.country, type: priced.type }, allowedCountries(ws));
  if (!safety.ok) {
    throw new DomainError('number_refused', safety.detail, { fields: [{ field: 'to', reason: safety.reason }], extra: { reason: safety.reason } });
  }
  if (input.timezone !== undefined && !validZone(input.timezone)) {
    throw validationError('timezone', `${input.timezone} is not an IANA time zone`);
  }
  const from = await cached(`sender:${scope.workspaceId}:${input.from ?? ''}`, () => resolveSender(db, scope.workspaceId, input.from));
  const id = newId('msg');
  const dedupeKey = idempotencyKey === undefined ? `api:${id}` : `api:${idempotencyKey}`;
  const scheduled = sendAt.getTime() > Date.now();
  const row: store.NewMessage = {
    id,
    organization_id: scope.organizationId,
    workspace_id: scope.workspaceId,
    dedupe_key: dedupeKey,
    request_hash: hash,
    producer: 'api',
    campaign_id: null,
    purpose: input.purpose,
    to_number: priced.to,
    country: priced.country,
    from_number: from,
    body: input.body,
    encoding: priced.encoding,
    segments: priced.segments,
    cost: priced.cost,
    send_at: sendAt,
    recipient_timezone: input.timezone ?? null,
  };
  let inserted: store.MessageRow | undefined;
  if (scheduled) {
    // A scheduled send also needs its dispatch job: one transaction.
    inserted = await inTransaction(db, async (trx) => {
      const [r] = await store.insertMessages(trx, [row]);
      if (r !== undefined) await scheduleDispatch(trx, scope.organizationId, { runAt: sendAt });
      return r;
    });
  } else {
    // The hot path: one statement inserts the message and its event; the
    // dispatchers are woken after commit, coalesced with other requests.
    let stored: () => void = () => undefined;
    if (immediate.admit !== undefined) {
      // a retry of a request already stored is answered at once, not held with new ones
      if (idempotencyKey !== undefined) {
        const existing = await store.findByDedupeKey(db, scope.workspaceId, dedupeKey);
        if (existing !== undefined) return replay(existing, hash);
      }
      try {
        stored = await immediate.admit(scope.organizationId);
      } catch (err) {
        // refused for room: a retry of a request already stored still gets its message
        const existing = idempotencyKey === undefined ? undefined : await store.findByDedupeKey(db, scope.workspaceId, dedupeKey);
        if (existing === undefined) throw err;
        return replay(existing, hash);
      }
    }
    try {
      inserted = immediate.insert !== undefined ? await immediate.insert(row) : (await store.insertMessages(db, [row], 'planned'))[0];
    } finally {
      stored();
    }
    if (inserted !== undefined) wakeDispatcher(db, scope.organizationId);
  }
  if (inserted !== undefined) return { message: inserted, created: true };
  // The idempotency key was taken (maybe by a concurrent request): answer with that message.
  const existing = await store.findByDedupeKey(db, scope.workspaceId, dedupeKey);
  if (existing === undefined) throw new Error('dedupe conflict without a row');
  return replay(existing, hash);
}

function replay(existing: store.MessageRow, hash: string): Intake {
  if (existing.request_hash !== hash) {
    throw new DomainError('idempotency_conflict', 'This Idempotency-Key was already used for a different message.');
  }
  return { message: existing, created: false };
}
