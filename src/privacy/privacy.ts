import { sql } from 'kysely';
import * as consent from '../consent/index.ts';
import type { Db, Tx } from '../db/db.ts';
import * as messaging from '../messaging/index.ts';
import { DomainError } from '../shared/errors.ts';

/**
 * GDPR for one phone number in one workspace: export everything held about
 * it, or erase it. Erasure pseudonymizes (the number becomes its keyed hash,
 * bodies and evidence are blanked) rather than deleting, so the ledger's
 * amounts stay intact and a later STOP from the same number still matches
 * the consent log. With its evidence gone no consent can be relied on, so
 * every purpose is revoked too.
 */
export interface PhoneExport {
  phone: string;
  consent: { state: Record<consent.ConsentPurpose, consent.ConsentState>; history: consent.ConsentEventRow[] };
  messages: (messaging.MessageRow & { events: messaging.EventRow[] })[];
  inbound_messages: { id: string; from_number: string; to_number: string; body: string; keyword: string | null; received_at: Date }[];
  /** The contact of that number (one per workspace; after an erasure, under its hash), with the lists it is in. */
  contacts: (Record<string, unknown> & { id: string; lists: string[] })[];
  /** The campaigns' snapshots of it, taken when each campaign started (the fields its template used). */
  campaign_recipients: { campaign_id: string; seq: number; phone: string; timezone: string | null; variables: unknown }[];
}

export async function exportPhone(db: Db, workspaceId: string, phone: string): Promise<PhoneExport> {
  const current = await consent.currentConsent(db, workspaceId, phone);
  const { rows: messages } = await sql<messaging.MessageRow>`select * from messages
    where workspace_id = ${workspaceId} and to_number in (${phone}, credence_phone_hash(${phone})) order by id`.execute(db);
  const out: PhoneExport['messages'] = [];
  for (const m of messages) out.push({ ...m, events: await messaging.listEvents(db, m.id) });
  const { rows: inbound } = await sql<PhoneExport['inbound_messages'][number]>`
    select id, from_number, to_number, body, keyword, received_at from inbound_messages
    where workspace_id = ${workspaceId} and from_number in (${phone}, credence_phone_hash(${phone})) order by id`.execute(db);
  const { rows: contacts } = await sql<PhoneExport['contacts'][number]>`
    select c.*, coalesce(array_agg(m.list_id order by m.list_id) filter (where m.list_id is not null), '{}') as lists
    from contacts c left join contact_list_members m on m.contact_id = c.id
    where c.workspace_id = ${workspaceId} and c.phone in (${phone}, credence_phone_hash(${phone}))
    group by c.id order by c.id`.execute(db);
  const { rows: recipients } = await sql<PhoneExport['campaign_recipients'][number]>`
    select r.campaign_id, r.seq, r.phone, r.timezone, r.variables from campaign_recipients r join campaigns c on c.id = r.campaign_id
    where c.workspace_id = ${workspaceId} and r.phone in (${phone}, credence_phone_hash(${phone})) order by r.campaign_id, r.seq`.execute(db);
  return { phone, consent: current, messages: out, inbound_messages: inbound, contacts, campaign_recipients: recipients };
}

export interface ErasureReport {
  phone_hash: string;
  messages_pseudonymized: number;
  messages_cancelled: number;
  consent_events_pseudonymized: number;
  inbound_pseudonymized: number;
  contacts_pseudonymized: number;
}

export async function erasePhone(db: Db, scope: { organizationId: string; workspaceId: string }, phone: string): Promise<ErasureReport> {
  return db.transaction().execute(async (trx) => {
    const { rows: hashRows } = await sql<{ h: string }>`select credence_phone_hash(${phone}) as h`.execute(trx);
    const hash = hashRows[0]!.h;
    const { rows: all } = await sql<messaging.MessageRow>`select * from messages
      where workspace_id = ${scope.workspaceId} and to_number = ${phone} order by id for update`.execute(trx);
    // A message in the carrier's hands without a settled outcome is found
    // again by its number: erase it once it has settled.
    const inFlight = all.filter((m) => m.status === 'sending' || m.status === 'unknown');
    if (inFlight.length > 0) {
      throw new DomainError('conflict', `${inFlight.length} message(s) to this number are being sent right now; try again in a few minutes.`, {
        extra: { in_flight: inFlight.map((m) => m.id) },
      });
    }
    const cancelled = await messaging.applyEventTo(
      trx,
      'skip',
      all.filter((m) => ['planned', 'queued', 'deferred', 'blocked'].includes(m.status)).map((m) => ({ id: m.id, patch: { reason: 'erased', reservation_id: null } })),
    );
    const cancelledIds = new Set(cancelled.map((c) => c.id));
    await messaging.releaseFor(
      trx,
      all.filter((m) => cancelledIds.has(m.id)),
      'recipient erased',
    );
    const pseudo = await sql`update messages set to_number = ${hash}, body = '[erased]', updated_at = now()
      where workspace_id = ${scope.workspaceId} and to_number = ${phone}`.execute(trx);
    const inbound = await sql`update inbound_messages set from_number = ${hash}, body = '[erased]', payload = '{}'::jsonb, erased = true
      where workspace_id = ${scope.workspaceId} and from_number = ${phone}`.execute(trx);
    // the contact and every campaign's snapshot of it
    const contactsErased = await eraseContact(trx, scope.workspaceId, phone, hash);
    await sql`update campaign_recipients r set phone = ${hash}, variables = '{}'::jsonb
      from campaigns c where c.id = r.campaign_id and c.workspace_id = ${scope.workspaceId} and r.phone = ${phone}`.execute(trx);
    const consents = await consent.eraseConsentEvents(trx, scope.workspaceId, phone);
    await consent.revokeErased(trx, scope, phone, 'privacy_erasure');
    return {
      phone_hash: hash,
      messages_pseudonymized: Number(pseudo.numAffectedRows ?? 0),
      messages_cancelled: cancelled.length,
      consent_events_pseudonymized: consents,
      inbound_pseudonymized: Number(inbound.numAffectedRows ?? 0),
      contacts_pseudonymized: contactsErased,
    };
  });
}

/**
 * The contact of `phone` takes the number's hash and loses its names,
 * locale and attributes. A number erased before already has such a contact
 * (the hash is the same each time): a contact added again since (by the
 * API, an import) is folded into that one instead (its list memberships
 * and campaign snapshots moved to it, then deleted), as the workspace's
 * one contact per phone would refuse a second. Returns the contacts erased.
 */
async function eraseContact(trx: Tx, workspaceId: string, phone: string, hash: string): Promise<number> {
  const { rows } = await sql<{ erased: string; fresh: string }>`
    select e.id as erased, f.id as fresh from contacts e join contacts f on f.workspace_id = e.workspace_id and f.phone = ${phone}
    where e.workspace_id = ${workspaceId} and e.phone = ${hash}
    for update`.execute(trx);
  const twin = rows[0];
  if (twin === undefined) {
    const updated = await sql`update contacts set phone = ${hash}, first_name = null, last_name = null, locale = null,
        attributes = '{}'::jsonb, updated_at = now()
      where workspace_id = ${workspaceId} and phone = ${phone}`.execute(trx);
    return Number(updated.numAffectedRows ?? 0);
  }
  await sql`insert into contact_list_members (list_id, contact_id)
    select list_id, ${twin.erased} from contact_list_members where contact_id = ${twin.fresh}
    on conflict do nothing`.execute(trx);
  await sql`update campaign_recipients r set contact_id = ${twin.erased}
    from campaigns c where c.id = r.campaign_id and c.workspace_id = ${workspaceId} and r.contact_id = ${twin.fresh}`.execute(trx);
  await sql`delete from contacts where id = ${twin.fresh}`.execute(trx);
  return 1;
}
