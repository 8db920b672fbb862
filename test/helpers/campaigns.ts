import { sql } from 'kysely';
import { newId } from '../../src/shared/ids.ts';
import { bearer } from './app.ts';
import { eventually, type Pipeline } from './pipeline.ts';

/**
 * Campaign test fixtures: contacts written straight to the table (the
 * contacts API has its own tests), a list holding them, marketing consent
 * for each through the consent API, and a zone where it is now early
 * afternoon so quiet hours never get in the way whatever time tests run.
 */
export function daytimeZone(): string {
  const offset = ((13 - new Date().getUTCHours() + 36) % 24) - 12;
  return offset === 0 ? 'Etc/UTC' : offset > 0 ? `Etc/GMT-${offset}` : `Etc/GMT+${-offset}`;
}

export interface Audience {
  listId: string;
  contactIds: string[];
  phones: string[];
}

export async function makeAudience(p: Pipeline, count: number, options: { firstPhone?: number; consent?: boolean } = {}): Promise<Audience> {
  const first = options.firstPhone ?? 2000;
  const zone = daytimeZone();
  const listId = newId('lst');
  await sql`insert into contact_lists (id, organization_id, workspace_id, name) values (${listId}, ${p.tenant.organizationId}, ${p.tenant.workspaceId}, 'test list')`.execute(
    p.tdb.db,
  );
  const contacts = Array.from({ length: count }, (_, i) => ({
    id: newId('ct'),
    phone: `+1415555${String(first + i).padStart(4, '0')}`,
    first_name: `Name${i}`,
  }));
  await sql`insert into contacts (id, organization_id, workspace_id, phone, country, first_name, timezone)
    select x.id, ${p.tenant.organizationId}, ${p.tenant.workspaceId}, x.phone, 'US', x.first_name, ${zone}
    from json_to_recordset(${JSON.stringify(contacts)}::json) as x(id text, phone text, first_name text)`.execute(p.tdb.db);
  await sql`insert into contact_list_members (list_id, contact_id) select ${listId}, unnest(${contacts.map((c) => c.id)}::text[])`.execute(p.tdb.db);
  if (options.consent !== false) {
    for (let i = 0; i < contacts.length; i += 1000) {
      const res = await p.app.inject({
        method: 'POST',
        url: '/v1/consents/bulk',
        headers: bearer(p.tenant.workspaceKey),
        payload: { items: contacts.slice(i, i + 1000).map((c) => ({ phone: c.phone, purposes: ['marketing'], action: 'granted', source: 'checkout_form' })) },
      });
      if (res.statusCode !== 201) throw new Error(`consent: ${res.body}`);
    }
  }
  return { listId, contactIds: contacts.map((c) => c.id), phones: contacts.map((c) => c.phone) };
}

export async function createCampaign(p: Pipeline, listId: string, extra: Record<string, unknown> = {}): Promise<{ id: string }> {
  const res = await p.app.inject({
    method: 'POST',
    url: '/v1/campaigns',
    headers: bearer(p.tenant.workspaceKey),
    payload: { name: 'Spring sale', body: 'Hi {{first_name|there}}, spring sale today!', audience: { type: 'list', id: listId }, ...extra },
  });
  if (res.statusCode !== 201) throw new Error(`create campaign: ${res.statusCode} ${res.body}`);
  return res.json() as { id: string };
}

export async function campaignAction(p: Pipeline, id: string, action: 'start' | 'pause' | 'resume' | 'cancel') {
  const res = await p.app.inject({ method: 'POST', url: `/v1/campaigns/${id}/${action}`, headers: bearer(p.tenant.workspaceKey) });
  return { statusCode: res.statusCode, json: res.json() as Record<string, unknown> };
}

export async function campaignRow(p: Pipeline, id: string) {
  const { rows } = await sql<{ status: string; pause_reason: string | null; cursor: number; audience_size: number | null }>`
    select status, pause_reason, cursor, audience_size from campaigns where id = ${id}`.execute(p.tdb.db);
  return rows[0]!;
}

export async function waitForCampaign(p: Pipeline, id: string, check: (c: Awaited<ReturnType<typeof campaignRow>>) => boolean, timeoutMs = 30_000) {
  return eventually(
    async () => {
      const c = await campaignRow(p, id);
      return check(c) ? c : undefined;
    },
    timeoutMs,
    `campaign ${id}`,
  );
}

/** Seq → phone of a started campaign's recipients. */
export async function recipients(p: Pipeline, id: string): Promise<{ seq: number; phone: string; variables: Record<string, unknown> }[]> {
  const { rows } = await sql<{ seq: number; phone: string; variables: Record<string, unknown> }>`
    select seq, phone, variables from campaign_recipients where campaign_id = ${id} order by seq`.execute(p.tdb.db);
  return rows;
}

/** Messages of the campaign not yet done (queued, sending, …). */
export async function inFlight(p: Pipeline, id: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from messages where campaign_id = ${id}
    and status in ('planned', 'queued', 'sending', 'unknown')`.execute(p.tdb.db);
  return rows[0]!.n;
}
