/**
 * What the chaos run does to Credence: the set-up through the public API
 * (organizations, workspaces, senders, CSV imports with consent, campaigns,
 * credits, a subscription), then each scheduled action, recording the
 * moments the checks need (a pause's commit, a freeze, a STOP).
 */
import { sql } from 'kysely';
import { DateTime } from 'luxon';
import { type Action, apiPhone, type CampaignPlan, type OrgKey, recipientPhone, type Scenario, zoneFor } from './scenario.ts';
import type { ChaosStack } from './stack.ts';

/** A stretch of time during which a gate was closed: no claim of what it covers may start inside it. */
export interface GateWindow {
  gate: 'stop' | 'pause' | 'freeze' | 'subscription' | 'workspace';
  /** What it covers: a campaign, an organization, a workspace, or a workspace and phone. */
  campaignId?: string;
  organizationId?: string;
  workspaceId?: string;
  phone?: string;
  /** Observed after the closing committed. */
  from: number;
  /** Taken before the reopening was asked for (Infinity: never reopened). */
  to: number;
}

export interface Records {
  windows: GateWindow[];
  /** API idempotency key → the message ids the API answered with. */
  apiKeys: Map<string, Set<string>>;
  actions: Record<string, { done: number; failed: number }>;
  /** Phone → the time zone given to its contact. */
  zones: Map<string, string>;
  /** Workspace id → its marketing window (minutes of the local day). */
  marketingWindows: Map<string, { start: number; end: number }>;
  negativeSamples: number;
  samples: number;
  log: string[];
}

export interface World {
  orgs: Map<OrgKey, { id: string; key: string }>;
  workspaces: Map<string, { id: string; key: string; sender: string; org: OrgKey }>;
  campaigns: Map<string, { id: string; plan: CampaignPlan }>;
  /** Cobalt's first pack payment: the charge a dispute is opened on. */
  disputeCharge?: string;
  disputeId?: string;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One HTTP call, JSON in and out; a 5xx or a connection error is tried again
 * for up to `patienceMs` (the database may be restarting), and a 429 after
 * its Retry-After (the API's flow control), as a well-behaved client does.
 */
export async function call(
  url: string,
  init: { method?: string; key?: string; body?: unknown; text?: string; contentType?: string; headers?: Record<string, string> } = {},
  patienceMs = 20_000,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const deadline = Date.now() + patienceMs;
  const method = init.method ?? (init.body !== undefined || init.text !== undefined ? 'POST' : 'GET');
  for (;;) {
    try {
      const res = await fetch(url, {
        method,
        headers: {
          ...(init.key !== undefined && { authorization: `Bearer ${init.key}` }),
          ...(init.body !== undefined && { 'content-type': 'application/json' }),
          ...(init.text !== undefined && { 'content-type': init.contentType ?? 'text/plain' }),
          ...init.headers,
        },
        ...(init.body !== undefined && { body: JSON.stringify(init.body) }),
        ...(init.text !== undefined && { body: init.text }),
      });
      const text = await res.text();
      if ((res.status >= 500 || res.status === 429) && Date.now() < deadline) {
        await sleep(res.status === 429 ? Number(res.headers.get('retry-after') ?? 1) * 1000 : 500);
        continue;
      }
      const json = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
      if (res.status >= 300) throw new HttpError(res.status, `${method} ${url}: ${res.status} ${text.slice(0, 300)}`);
      return { status: res.status, json };
    } catch (err) {
      if (err instanceof HttpError || Date.now() >= deadline) throw err;
      await sleep(500);
    }
  }
}

async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

export function newRecords(): Records {
  return { windows: [], apiKeys: new Map(), actions: {}, zones: new Map(), marketingWindows: new Map(), negativeSamples: 0, samples: 0, log: [] };
}

const BODY = 'Hi {{first_name|there}}, our autumn sale starts now: 20% off with code {{code|AUTUMN}}. Reply STOP to opt out.';

/** Organizations, workspaces, senders, audiences (CSV imports with consent), campaigns and the starting credits. */
export async function setUp(stack: ChaosStack, scenario: Scenario, records: Records, now: Date): Promise<World> {
  const api = stack.apiUrl;
  const world: World = { orgs: new Map(), workspaces: new Map(), campaigns: new Map() };
  for (const o of scenario.orgs) {
    const { json } = await call(`${api}/v1/organizations`, { key: stack.opKey, body: { name: o.name } });
    const org = json as { organization: { id: string }; admin_key: { key: string } };
    world.orgs.set(o.key, { id: org.organization.id, key: org.admin_key.key });
  }
  for (const w of scenario.workspaces) {
    const org = world.orgs.get(w.org)!;
    const { json: ws } = await call(`${api}/v1/workspaces`, { key: org.key, body: { name: w.key } });
    const id = ws.id as string;
    const { json: key } = await call(`${api}/v1/api-keys`, { key: org.key, body: { name: `${w.key} key`, scope: 'workspace', workspace_id: id } });
    await call(`${api}/v1/sender-numbers`, { key: key.key as string, body: { phone_number: w.sender, kind: 'short_code', mps: w.senderMps ?? 10_000 } });
    if (w.api) await call(`${api}/v1/workspaces/${id}/sending-rules`, { method: 'PATCH', key: org.key, body: { hourly_cap: null } });
    world.workspaces.set(w.key, { id, key: key.key as string, sender: w.sender, org: w.org });
  }
  // audiences: one CSV import per campaign into its list, marketing consent recorded with the import
  for (const c of scenario.campaigns) {
    const ws = world.workspaces.get(c.workspace)!;
    const { json: list } = await call(`${api}/v1/lists`, { key: ws.key, body: { name: `${c.key} audience` } });
    const lines = ['phone,first_name,timezone,consent_marketing'];
    for (let seq = 1; seq <= c.recipients; seq++) {
      const phone = recipientPhone(c, seq);
      const zone = zoneFor(seq, now);
      records.zones.set(phone, zone);
      lines.push(`${phone},Name${seq},${zone},yes`);
    }
    const { json: imp } = await call(`${api}/v1/contacts/imports?list_id=${list.id as string}`, { key: ws.key, text: `${lines.join('\n')}\n`, contentType: 'text/csv' }, 0);
    const done = await eventually(
      `import of ${c.key}`,
      async () => {
        const { json } = await call(`${api}/v1/contacts/imports/${imp.id as string}`, { key: ws.key });
        return json.status === 'completed' || json.status === 'failed' ? json : undefined;
      },
      600_000,
    );
    if (done.status !== 'completed' || done.rows_invalid !== 0 || done.rows_imported !== c.recipients) {
      throw new Error(`import of ${c.key} did not take every row: ${JSON.stringify(done)}`);
    }
    const { json: campaign } = await call(`${api}/v1/campaigns`, {
      key: ws.key,
      body: { name: c.key, body: BODY, audience: { type: 'list', id: list.id }, from: ws.sender },
    });
    world.campaigns.set(c.key, { id: campaign.id as string, plan: c });
  }
  for (const o of scenario.orgs) {
    const org = world.orgs.get(o.key)!;
    if (o.startCredits > 0) {
      await call(`${api}/v1/organizations/${org.id}/credits/grants`, { key: stack.opKey, body: { amount: o.startCredits, reason: 'chaos: starting credits', idempotency_key: 'chaos-start' } });
    }
    if (o.subscribed) {
      await checkoutAndPay(stack, org.key, 'plan');
      await eventually(`${o.key}'s subscription`, async () => {
        const { rows } = await sql<{ status: string }>`select status from subscriptions where organization_id = ${org.id}`.execute(stack.db);
        return rows[0]?.status === 'active' ? true : undefined;
      });
    }
  }
  // Cobalt buys a pack before sending: the charge its dispute is opened on later.
  const cobalt = world.orgs.get('cobalt')!;
  const session = await checkoutAndPay(stack, cobalt.key, 'pack');
  world.disputeCharge = await eventually('the pack payment', async () => {
    const { rows } = await sql<{ payment_intent: string | null }>`select payment_intent from checkout_sessions where id = ${session}`.execute(stack.db);
    const intent = rows[0]?.payment_intent;
    if (!intent) return undefined;
    const { json } = await call(`${stack.paymentsUrl}/v1/payment_intents/${intent}`, { key: stack.paymentsSecretKey });
    return (json.latest_charge as string | null) ?? undefined;
  });
  for (const ws of world.workspaces.values()) {
    const { json } = await call(`${api}/v1/workspaces/${ws.id}/sending-rules`, { key: world.orgs.get(ws.org)!.key });
    const w = (json as { effective?: { send_windows?: Record<string, { start: string; end: string } | null> } }).effective?.send_windows?.marketing;
    if (w) records.marketingWindows.set(ws.id, { start: minutes(w.start), end: minutes(w.end) });
  }
  return world;
}

const minutes = (hhmm: string) => {
  const [h, m] = hhmm.split(':').map(Number);
  return h! * 60 + m!;
};
const hhmm = (mins: number) => `${String(Math.floor(mins / 60) % 24).padStart(2, '0')}:${String(mins % 60).padStart(2, '0')}`;

/**
 * Quiet hours that end mid-run: the workspace's marketing window opens at
 * the minute after `opensAt` in the zone of a third of its audience (the
 * others, an hour or two ahead, are inside it already).
 */
export async function openWindowLater(stack: ChaosStack, world: World, records: Records, workspaceKey: string, opensAt: Date, now: Date): Promise<void> {
  const ws = world.workspaces.get(workspaceKey)!;
  const local = DateTime.fromJSDate(opensAt, { zone: zoneFor(0, now) });
  const start = (local.hour * 60 + local.minute + 1) % 1440;
  const end = (start + 6 * 60) % 1440;
  await call(`${stack.apiUrl}/v1/workspaces/${ws.id}/sending-rules`, {
    method: 'PATCH',
    key: world.orgs.get(ws.org)!.key,
    body: { send_windows: { marketing: { start: hhmm(start), end: hhmm(end) } } },
  });
  records.marketingWindows.set(ws.id, { start, end });
}

async function checkoutAndPay(stack: ChaosStack, orgKey: string, kind: 'pack' | 'plan'): Promise<string> {
  const { json } = await call(`${stack.apiUrl}/v1/billing/checkout`, { key: orgKey, body: { kind, item: 'chaos' } });
  const id = json.session_id as string;
  await call(`${stack.paymentsUrl}/_sim/sessions/${id}/pay`, { body: {} });
  return id;
}

/** Carry out one action; what the checks need is written into `records`. */
export async function perform(stack: ChaosStack, scenario: Scenario, world: World, records: Records, action: Action, index: number): Promise<void> {
  const api = stack.apiUrl;
  const orgOf = (k: OrgKey) => world.orgs.get(k)!;
  switch (action.kind) {
    case 'kill_worker':
      return stack.killWorker(action.worker);
    case 'pg_restart':
      records.log.push(`PostgreSQL stopped for ${action.downMs} ms`);
      return stack.restartPostgres(action.downMs);
    case 'outage': {
      const { json: clock } = await call(`${stack.simUrl}/_sim/clock`);
      const from = clock.elapsedMs as number;
      await call(`${stack.simUrl}/_sim/faults`, { method: 'PUT', body: { ...scenario.faults, outages: [{ startMs: from, endMs: from + action.durationMs }] } });
      return;
    }
    case 'purchase':
      await checkoutAndPay(stack, orgOf(action.org).key, 'pack');
      return;
    case 'renewal':
      await call(`${stack.paymentsUrl}/_sim/clock/advance`, { body: {} });
      return;
    case 'rollback': {
      const org = orgOf(action.org);
      const body = { amount: -action.amount, reason: 'chaos: operator rollback', idempotency_key: `chaos-rollback-${index}` };
      await call(`${api}/v1/organizations/${org.id}/credits/adjustments`, { key: stack.opKey, body });
      if (action.repeat) await call(`${api}/v1/organizations/${org.id}/credits/adjustments`, { key: stack.opKey, body });
      return;
    }
    case 'subscription_cancel': {
      const org = orgOf(action.org);
      const { rows } = await sql<{ stripe_subscription_id: string }>`select stripe_subscription_id from subscriptions
        where organization_id = ${org.id} and status = 'active'`.execute(stack.db);
      if (rows[0] === undefined) throw new Error('no active subscription to cancel');
      await call(`${stack.paymentsUrl}/_sim/subscriptions/${rows[0].stripe_subscription_id}/cancel`, { body: {} });
      const from = await eventually('the cancellation to be recorded', async () => {
        const { rows: ok } = await sql<{ ok: boolean }>`select credence_subscription_ok(${org.id}) as ok`.execute(stack.db);
        return ok[0]?.ok === false ? Date.now() : undefined;
      });
      records.windows.push({ gate: 'subscription', organizationId: org.id, from, to: Infinity });
      return;
    }
    case 'subscription_reactivate': {
      const org = orgOf(action.org);
      closeWindow(records, (w) => w.gate === 'subscription' && w.organizationId === org.id);
      await checkoutAndPay(stack, org.key, 'plan');
      return;
    }
    case 'dispute_open': {
      const org = orgOf(action.org);
      const { json } = await call(`${stack.paymentsUrl}/_sim/charges/${world.disputeCharge}/dispute`, { body: {} });
      world.disputeId = json.id as string;
      const from = await eventually('the dispute to freeze the organization', async () => {
        const { rows } = await sql<{ frozen: boolean }>`select frozen_at is not null as frozen from organizations where id = ${org.id}`.execute(stack.db);
        return rows[0]?.frozen ? Date.now() : undefined;
      });
      records.windows.push({ gate: 'freeze', organizationId: org.id, from, to: Infinity });
      return;
    }
    case 'dispute_close': {
      const org = orgOf(action.org);
      if (world.disputeId === undefined) throw new Error('no dispute was opened');
      closeWindow(records, (w) => w.gate === 'freeze' && w.organizationId === org.id);
      await call(`${stack.paymentsUrl}/_sim/disputes/${world.disputeId}/close`, { body: { outcome: 'won' } });
      return;
    }
    case 'refund': {
      // the organization's latest payment of that kind, as Credence recorded it; its charge, as Stripe has it
      const org = orgOf(action.org);
      const table = action.payment === 'invoice' ? sql`invoice_payments` : sql`payments`;
      // read through PostgreSQL's restart, if one is under way
      const paid = await eventually(`${action.org}'s latest ${action.payment} payment`, async () => {
        const { rows } = await sql<{ payment_intent: string; amount: number }>`select payment_intent, amount from ${table}
          where organization_id = ${org.id} order by created_at desc limit 1`.execute(stack.db);
        return rows[0];
      });
      const { json } = await call(`${stack.paymentsUrl}/v1/payment_intents/${paid.payment_intent}`, { key: stack.paymentsSecretKey });
      const charge = json.latest_charge as string | null;
      if (charge === null) throw new Error(`payment ${paid.payment_intent} has no charge`);
      await call(`${stack.paymentsUrl}/_sim/charges/${charge}/refund`, { body: { amount: Math.max(1, Math.round((paid.amount * action.percent) / 100)) } });
      return;
    }
    case 'operator_freeze': {
      const org = orgOf(action.org);
      await call(`${api}/v1/organizations/${org.id}/freeze`, { key: stack.opKey, body: { reason: 'chaos: operator freeze' } });
      records.windows.push({ gate: 'freeze', organizationId: org.id, from: Date.now(), to: Infinity });
      return;
    }
    case 'operator_unfreeze': {
      const org = orgOf(action.org);
      closeWindow(records, (w) => w.gate === 'freeze' && w.organizationId === org.id);
      await call(`${api}/v1/organizations/${org.id}/unfreeze`, { key: stack.opKey, body: { reason: 'chaos: operator unfreeze' } });
      return;
    }
    case 'workspace_disable': {
      const ws = world.workspaces.get(action.workspace)!;
      const org = orgOf(ws.org);
      await call(`${api}/v1/workspaces/${ws.id}`, { method: 'PATCH', key: org.key, body: { sms_enabled: false, reason: 'chaos: workspace off' } });
      records.windows.push({ gate: 'workspace', workspaceId: ws.id, from: Date.now(), to: Infinity });
      return;
    }
    case 'workspace_enable': {
      const ws = world.workspaces.get(action.workspace)!;
      const org = orgOf(ws.org);
      closeWindow(records, (w) => w.gate === 'workspace' && w.workspaceId === ws.id);
      await call(`${api}/v1/workspaces/${ws.id}`, { method: 'PATCH', key: org.key, body: { sms_enabled: true, reason: 'chaos: workspace on' } });
      return;
    }
    case 'storm': {
      const c = world.campaigns.get(action.campaign)!;
      const ws = world.workspaces.get(c.plan.workspace)!;
      for (let i = 0; i < action.toggles; i++) {
        const verb = i % 2 === 0 ? 'pause' : 'resume';
        if (verb === 'resume') closeWindow(records, (w) => w.gate === 'pause' && w.campaignId === c.id);
        try {
          await call(`${api}/v1/campaigns/${c.id}/${verb}`, { key: ws.key, body: {} });
          if (verb === 'pause') records.windows.push({ gate: 'pause', campaignId: c.id, from: Date.now(), to: Infinity });
        } catch (err) {
          // 409: not running (paused for credits, completed): nothing to record
          if (!(err instanceof HttpError && err.status === 409)) throw err;
        }
      }
      return;
    }
    case 'stop': {
      const c = world.campaigns.get(action.campaign)!;
      const ws = world.workspaces.get(c.plan.workspace)!;
      for (const seq of action.seqs) {
        const phone = recipientPhone(c.plan, seq);
        // Twilio does not retry an inbound webhook the API failed to take (the database
        // may be restarting): the person texts STOP again until it is taken.
        const deadline = Date.now() + 30_000;
        for (;;) {
          const { json } = await call(`${stack.simUrl}/_sim/inbound`, { body: { from: phone, to: ws.sender, body: seq % 2 === 0 ? 'STOP' : 'unsubscribe' } });
          if (json.status === 200) {
            records.windows.push({ gate: 'stop', workspaceId: ws.id, phone, from: Date.now(), to: Infinity });
            break;
          }
          if (Date.now() > deadline) throw new Error(`STOP from ${phone} not taken: ${JSON.stringify(json)}`);
          await sleep(500);
        }
      }
      return;
    }
    case 'api_send': {
      const ws = world.workspaces.get(scenario.workspaces.find((w) => w.api)!.key)!;
      const key = `chaos-api-${action.index}`;
      const post = async () => {
        const { json } = await call(`${api}/v1/messages`, {
          key: ws.key,
          headers: { 'idempotency-key': key },
          body: { to: apiPhone(action.index), body: `Your Cobalt order #${10_000 + action.index} has shipped.`, purpose: 'transactional' },
        });
        const ids = records.apiKeys.get(key) ?? new Set<string>();
        ids.add(json.id as string);
        records.apiKeys.set(key, ids);
      };
      if (action.concurrent) await Promise.all(Array.from({ length: action.copies }, post));
      else for (let i = 0; i < action.copies; i++) await post();
      return;
    }
  }
}

function closeWindow(records: Records, match: (w: GateWindow) => boolean): void {
  const now = Date.now();
  for (const w of records.windows) if (match(w) && w.to === Infinity) w.to = now;
}

/** After the actions: credits for everything left, every campaign running, then wait until nothing is in flight. */
export async function heal(stack: ChaosStack, scenario: Scenario, world: World): Promise<void> {
  for (const o of scenario.orgs) {
    const org = world.orgs.get(o.key)!;
    const audience = scenario.campaigns.filter((c) => scenario.workspaces.find((w) => w.key === c.workspace)!.org === o.key).reduce((n, c) => n + c.recipients, 0);
    // a grant repays debt first (rollbacks and refunds may have left some)
    const { rows } = await sql<{ debt: number }>`select coalesce(max(debt), 0)::bigint as debt from credit_accounts where organization_id = ${org.id}`.execute(stack.db);
    await call(`${stack.apiUrl}/v1/organizations/${org.id}/credits/grants`, {
      key: stack.opKey,
      body: { amount: audience + scenario.scale.apiSends + 100 + rows[0]!.debt, reason: 'chaos: credits to finish', idempotency_key: 'chaos-heal' },
    });
  }
  for (const c of world.campaigns.values()) {
    const ws = world.workspaces.get(c.plan.workspace)!;
    await call(`${stack.apiUrl}/v1/campaigns/${c.id}/resume`, { key: ws.key, body: {} }).catch((err: unknown) => {
      if (!(err instanceof HttpError && err.status === 409)) throw err;
    });
  }
}

/** Sample every account's available credits; a negative one is counted (G1). */
export async function sampleBalances(stack: ChaosStack, records: Records): Promise<void> {
  const { rows } = await sql<{ negative: number }>`select count(*)::int as negative from credit_accounts
    where allowance_available < 0 or purchased_available < 0 or reserved_allowance < 0 or reserved_purchased < 0`.execute(stack.db);
  records.samples++;
  records.negativeSamples += rows[0]!.negative;
}
