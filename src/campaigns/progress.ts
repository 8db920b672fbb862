import { sql } from 'kysely';
import { audienceQuery } from '../contacts/index.ts';
import * as credits from '../credits/index.ts';
import type { DbOrTx } from '../db/db.ts';
import * as messaging from '../messaging/index.ts';
import { allowedCountries } from '../sendrules/index.ts';
import { type CampaignRow, contactVariables } from './campaigns.store.ts';
import { judgeRecipient } from './recipient.ts';
import { parseTemplate, render, type Variables } from './template.ts';

export interface Progress {
  campaign_id: string;
  status: string;
  pause_reason: string | null;
  audience_size: number | null;
  created: number;
  by_status: Record<string, number>;
  skipped_by_reason: Record<string, number>;
  done: number;
  credits: { reserved: number; captured: number };
  sends_last_minute: number;
  eta_seconds: number | null;
}

/** Counts by status and skip reason, credits reserved and captured, send rate and ETA. */
export async function campaignProgress(db: DbOrTx, c: CampaignRow): Promise<Progress> {
  const { rows } = await sql<{ status: string; status_reason: string | null; n: number }>`
    select status, case when status = 'skipped' then status_reason end as status_reason, count(*)::int as n
    from messages where campaign_id = ${c.id} group by 1, 2`.execute(db);
  const byStatus: Record<string, number> = {};
  const skipped: Record<string, number> = {};
  for (const r of rows) {
    byStatus[r.status] = (byStatus[r.status] ?? 0) + r.n;
    if (r.status === 'skipped') skipped[r.status_reason ?? 'unknown'] = (skipped[r.status_reason ?? 'unknown'] ?? 0) + r.n;
  }
  const { rows: money } = await sql<{ reserved: number; captured: number; recent: number }>`
    select
      coalesce(sum(r.from_allowance + r.from_purchased) filter (where r.state = 'open'), 0)::int as reserved,
      coalesce(sum(r.from_allowance + r.from_purchased) filter (where r.state in ('captured', 'refunded')), 0)::int as captured,
      (select count(*)::int from messages where campaign_id = ${c.id} and claimed_at > now() - interval '1 minute') as recent
    from messages m join credit_reservations r on r.message_id = m.id
    where m.campaign_id = ${c.id}`.execute(db);
  const created = Object.values(byStatus).reduce((a, b) => a + b, 0);
  const done = ['sent', 'delivered', 'undelivered', 'failed', 'skipped'].reduce((s, k) => s + (byStatus[k] ?? 0), 0);
  const recent = money[0]?.recent ?? 0;
  const remaining = (c.audience_size ?? 0) - done;
  return {
    campaign_id: c.id,
    status: c.status,
    pause_reason: c.pause_reason,
    audience_size: c.audience_size,
    created,
    by_status: byStatus,
    skipped_by_reason: skipped,
    done,
    credits: { reserved: money[0]?.reserved ?? 0, captured: money[0]?.captured ?? 0 },
    sends_last_minute: recent,
    eta_seconds: c.status === 'running' && recent > 0 ? Math.ceil((remaining / recent) * 60) : null,
  };
}

export interface Rendered {
  body: string;
  segments: number;
  encoding: string;
  /** What this recipient would cost: 0 when skipped. */
  cost: number;
  country: string;
  /** Why the campaign would skip this recipient for free (as advance, dispatch and the quote decide), or null. */
  skip_reason: string | null;
}

export async function renderFor(db: DbOrTx, c: CampaignRow, vars: Variables, phone: string): Promise<Rendered> {
  const parsed = parseTemplate(c.body_template);
  if (!parsed.ok) throw new Error('template does not parse');
  const body = render(parsed, vars);
  const priceList = await messaging.organizationPriceList(db, c.organization_id);
  const allowed = allowedCountries(await messaging.workspaceCountries(db, c.workspace_id));
  const { rows } = await sql<{ ok: boolean }>`select exists (select 1 from credence_consent_check(${c.workspace_id}, ${phone}, ${c.purpose}, 'campaign') cc
    where cc.allowed) as ok`.execute(db);
  const verdict = judgeRecipient(phone, body, { allowed, priceList, consentOk: rows[0]?.ok ?? false });
  // a skipped recipient is still shown as the body would read, priced at nothing
  const shown = messaging.countSegments(body);
  return {
    body,
    segments: shown.segments,
    encoding: shown.encoding,
    cost: verdict.skip === null ? verdict.priced.cost : 0,
    country: verdict.phone.ok ? verdict.phone.country : 'ZZ',
    skip_reason: verdict.skip,
  };
}

export interface Quote {
  /** Before start the audience; once started, the recipients still to pay for. */
  recipients: number;
  by_country: { country: string; recipients: number; segments: number; credits: number }[];
  total_segments: number;
  total_credits: number;
  available_credits: number;
  /** Recipients the campaign would charge: not skipped for free (no consent, a number or country it may not text, an empty or too long body). */
  billable: number;
  /** Recipients skipped for free, as the pipeline would skip them. */
  skipped: number;
  /** How many billable recipients, in order, the current balance pays for. */
  covered: number;
  /** "covered of billable", e.g. "7,412 of 10,000". */
  summary: string;
}

/**
 * The contact a preview renders for: the one named (any contact of the
 * workspace), or by default the first of the campaign's audience (the
 * lowest contact id of its list or segment), undefined if there is none.
 */
export async function previewContact(
  db: DbOrTx,
  c: CampaignRow,
  contactId: string | undefined,
): Promise<{ id: string; phone: string; variables: Variables } | undefined> {
  const from =
    contactId !== undefined
      ? sql`(select * from contacts where workspace_id = ${c.workspace_id} and id = ${contactId})`
      : sql`(${await audienceQuery(db, c.workspace_id, { type: c.audience_type, id: c.audience_id })})`;
  const { rows } = await sql<{ id: string; phone: string; variables: Variables }>`
    select a.id, a.phone, ${contactVariables('a')} as variables from ${from} a order by a.id limit 1`.execute(db);
  return rows[0];
}

/**
 * Pre-flight estimate: every recipient rendered and priced (before start the
 * live audience; once started, the recipients still to pay for: not yet
 * created, or created and waiting for credits), by country, and how many in
 * order the available balance covers. A campaign paused for credits is
 * quoted for the rest, so "3,000 of 4,000" says what a purchase must cover
 * (it quoted the whole audience, the sent part included, against the
 * balance left). Reads in pages of 5,000.
 */
export async function quoteCampaign(db: DbOrTx, c: CampaignRow): Promise<Quote> {
  const parsed = parseTemplate(c.body_template);
  if (!parsed.ok) throw new Error('template does not parse');
  const priceList = await messaging.organizationPriceList(db, c.organization_id);
  // the numbers the campaign would skip for free (a country the workspace may not text, premium rate, …), as advance decides
  const allowed = allowedCountries(await messaging.workspaceCountries(db, c.workspace_id));
  const balance = await credits.getCredits(db, c.organization_id);
  // debt blocks every reservation
  const available = balance.debt > 0 ? 0 : balance.available;
  const byCountry = new Map<string, { recipients: number; segments: number; credits: number }>();
  let recipients = 0;
  let total = 0;
  let segments = 0;
  let covered = 0;
  let stillCovered = true;
  let billable = 0;
  const source =
    c.audience_size !== null
      ? sql`select r.seq::text as k, r.phone, r.variables from campaign_recipients r where r.campaign_id = ${c.id}
          and not exists (select 1 from messages m where m.workspace_id = ${c.workspace_id}
            and m.dedupe_key = 'campaign:' || ${c.id} || ':' || r.seq and m.status not in ('planned', 'blocked', 'deferred'))`
      : sql`select a.id as k, a.phone, ${contactVariables('a')} as variables
          from (${await audienceQuery(db, c.workspace_id, { type: c.audience_type, id: c.audience_id })}) a`;
  let after: string | null = null;
  for (;;) {
    // consent as dispatch checks it: a recipient without it is skipped, and costs nothing
    const { rows } = await sql<{ k: string; phone: string; variables: Variables; consent_ok: boolean }>`select s.*,
        exists (select 1 from credence_consent_check(${c.workspace_id}, s.phone, ${c.purpose}, 'campaign') cc where cc.allowed) as consent_ok
      from (${source}) s
      ${after === null ? sql`` : c.audience_size !== null ? sql`where s.k::int > ${Number(after)}` : sql`where s.k > ${after}`}
      order by ${c.audience_size !== null ? sql`s.k::int` : sql`s.k`} limit 5000`.execute(db);
    if (rows.length === 0) break;
    for (const r of rows) {
      recipients++;
      const verdict = judgeRecipient(r.phone, render(parsed, r.variables), { allowed, priceList, consentOk: r.consent_ok });
      if (verdict.skip !== null) continue;
      const { priced } = verdict;
      const entry = byCountry.get(priced.country) ?? { recipients: 0, segments: 0, credits: 0 };
      entry.recipients++;
      entry.segments += priced.segments;
      entry.credits += priced.cost;
      byCountry.set(priced.country, entry);
      billable++;
      segments += priced.segments;
      total += priced.cost;
      if (stillCovered && total <= available) covered++;
      else stillCovered = false;
    }
    after = rows.at(-1)!.k;
  }
  return {
    recipients,
    by_country: [...byCountry].map(([country, v]) => ({ country, ...v })).sort((a, b) => b.credits - a.credits),
    total_segments: segments,
    total_credits: total,
    available_credits: available,
    billable,
    skipped: recipients - billable,
    covered,
    summary: `${covered.toLocaleString('en-US')} of ${billable.toLocaleString('en-US')}`,
  };
}
