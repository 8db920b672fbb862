/**
 * The chaos run's plan, pure: from a seed and a scale, the organizations,
 * workspaces, audiences and the whole schedule of actions and faults. The
 * same seed gives the same plan (the run replays it; what the processes make
 * of it under a real scheduler may still differ, the checks do not).
 */
import { createRandom } from '../src/shared/random.ts';

export interface Scale {
  name: string;
  /** Campaign recipients in all. */
  recipients: number;
  /** API single sends (each key posted two or three times). */
  apiSends: number;
  /** How long actions and faults go on once sending started. */
  actionWindowMs: number;
  workers: number;
  /** How long the run may take to settle after the actions before it gives up. */
  settleTimeoutMs: number;
}

export const SCALES: Readonly<Record<string, Scale>> = {
  small: { name: 'small', recipients: 10_000, apiSends: 120, actionWindowMs: 45_000, workers: 3, settleTimeoutMs: 150_000 },
  default: { name: 'default', recipients: 100_000, apiSends: 600, actionWindowMs: 150_000, workers: 3, settleTimeoutMs: 900_000 },
  large: { name: 'large', recipients: 300_000, apiSends: 1_000, actionWindowMs: 300_000, workers: 4, settleTimeoutMs: 1_800_000 },
};

/** `--scale small|default|large|<recipients>` */
export function parseScale(text: string): Scale | { error: string } {
  const named = SCALES[text];
  if (named !== undefined) return named;
  if (/^\d+$/.test(text) && Number(text) >= 1_000 && Number(text) <= 2_000_000) {
    const recipients = Number(text);
    const ratio = recipients / 100_000;
    return {
      name: text,
      recipients,
      apiSends: Math.max(60, Math.round(600 * ratio)),
      actionWindowMs: Math.max(45_000, Math.round(150_000 * Math.min(2, ratio))),
      workers: 3,
      settleTimeoutMs: Math.max(150_000, Math.round(900_000 * ratio)),
    };
  }
  return { error: `--scale must be small, default, large or a number of recipients from 1000 to 2000000, got "${text}"` };
}

export type OrgKey = 'acme' | 'bloom' | 'cobalt';

export interface CampaignPlan {
  key: string;
  workspace: string;
  recipients: number;
  /** Audience phones are +1 <area> <first + i>, seven digits. */
  area: string;
  firstLine: number;
}

export interface WorkspacePlan {
  key: string;
  org: OrgKey;
  sender: string;
  /**
   * A marketing window opening this long after sending starts (for part of
   * the audience): quiet hours that end mid-run.
   */
  windowOpensAfterMs?: number;
  /** API single sends go here (transactional, no hourly cap). */
  api?: boolean;
  /** Its sender's rate (default 10,000 a second: no limit in practice). */
  senderMps?: number;
}

export interface OrgPlan {
  key: OrgKey;
  name: string;
  /** Credits granted before sending: about 70 % of the audience's cost. */
  startCredits: number;
  /** A subscription from the start (Bloom). */
  subscribed: boolean;
}

export type Action =
  | { atMs: number; kind: 'kill_worker'; worker: number }
  | { atMs: number; kind: 'pg_restart'; downMs: number }
  | { atMs: number; kind: 'outage'; durationMs: number }
  | { atMs: number; kind: 'purchase'; org: OrgKey }
  | { atMs: number; kind: 'renewal' }
  | { atMs: number; kind: 'rollback'; org: OrgKey; amount: number; repeat: boolean }
  | { atMs: number; kind: 'subscription_cancel'; org: OrgKey }
  | { atMs: number; kind: 'subscription_reactivate'; org: OrgKey }
  | { atMs: number; kind: 'dispute_open'; org: OrgKey }
  | { atMs: number; kind: 'dispute_close'; org: OrgKey }
  | { atMs: number; kind: 'operator_freeze'; org: OrgKey }
  | { atMs: number; kind: 'operator_unfreeze'; org: OrgKey }
  | { atMs: number; kind: 'workspace_disable'; workspace: string }
  | { atMs: number; kind: 'workspace_enable'; workspace: string }
  | { atMs: number; kind: 'storm'; campaign: string; toggles: number }
  | { atMs: number; kind: 'stop'; campaign: string; seqs: number[] }
  | { atMs: number; kind: 'api_send'; index: number; copies: number; concurrent: boolean }
  /** Part of an organization's latest payment refunded at Stripe: a pack's charge, or a subscription invoice's. */
  | { atMs: number; kind: 'refund'; org: OrgKey; payment: 'pack' | 'invoice'; percent: number };

export interface Scenario {
  seed: number;
  scale: Scale;
  orgs: OrgPlan[];
  workspaces: WorkspacePlan[];
  campaigns: CampaignPlan[];
  /** Pack size in credits (BILLING_CATALOG) and the plan's monthly allowance. */
  packCredits: number;
  planCredits: number;
  faults: {
    latencyMs: { min: number; max: number };
    errors: Record<string, number>;
    dropAfterAccept: number;
    finalStatus: { undelivered: number; failed: number };
    duplicateCallbacks: number;
    reorderCallbacks: number;
    loseFinalCallbacks: number;
  };
  /** Stripe webhook delivery faults. */
  delivery: { duplicateRate: number; reorderWindowMs: number };
  actions: Action[];
}

const SHARES: { key: string; workspace: string; org: OrgKey; share: number; area: string }[] = [
  { key: 'acme-spring', workspace: 'acme-shop', org: 'acme', share: 0.3, area: '415' },
  { key: 'acme-outlet', workspace: 'acme-outlet', org: 'acme', share: 0.15, area: '312' },
  { key: 'bloom-news', workspace: 'bloom-studio', org: 'bloom', share: 0.25, area: '206' },
  { key: 'cobalt-promo', workspace: 'cobalt-store', org: 'cobalt', share: 0.3, area: '617' },
];

export function planScenario(seed: number, scale: Scale): Scenario {
  const random = createRandom(seed);
  const between = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const W = scale.actionWindowMs;
  const at = (fromShare: number, toShare: number) => between(Math.round(W * fromShare), Math.round(W * toShare));

  const campaigns: CampaignPlan[] = [];
  let assigned = 0;
  SHARES.forEach((s, i) => {
    const recipients = i === SHARES.length - 1 ? scale.recipients - assigned : Math.round(scale.recipients * s.share);
    assigned += recipients;
    campaigns.push({ key: s.key, workspace: s.workspace, recipients, area: s.area, firstLine: 2_000_000 + i * 10_000 });
  });
  // A rate the claim must hold while workers die (no random draw: a seed's schedule stays what it
  // was): one workspace's sender slow enough that the backlog its quiet hours release waits in the
  // sender's queue; it sends its audience in about half the action window.
  const bloomSenderMps = Math.max(20, Math.round(campaigns.find((c) => c.key === 'bloom-news')!.recipients / ((W / 1000) * 0.5)));
  const audienceOf = (org: OrgKey) => campaigns.filter((c) => SHARES.find((s) => s.key === c.key)!.org === org).reduce((n, c) => n + c.recipients, 0);

  const orgs: OrgPlan[] = [
    { key: 'acme', name: 'Acme Shops', startCredits: Math.round(audienceOf('acme') * 0.7), subscribed: false },
    { key: 'bloom', name: 'Bloom Studio', startCredits: 0, subscribed: true },
    { key: 'cobalt', name: 'Cobalt Store', startCredits: Math.round(audienceOf('cobalt') * 0.7), subscribed: false },
  ];
  const planCredits = Math.round(audienceOf('bloom') * 0.35);
  // Bloom's 70 %: the plan's allowance plus a grant.
  orgs[1]!.startCredits = Math.round(audienceOf('bloom') * 0.7) - planCredits;
  const workspaces: WorkspacePlan[] = [
    { key: 'acme-shop', org: 'acme', sender: '+14155550101' },
    { key: 'acme-outlet', org: 'acme', sender: '+13125550102' },
    { key: 'bloom-studio', org: 'bloom', sender: '+12065550103', windowOpensAfterMs: Math.max(20_000, Math.round(W * 0.4)), senderMps: bloomSenderMps },
    { key: 'cobalt-store', org: 'cobalt', sender: '+16175550104' },
    { key: 'cobalt-api', org: 'cobalt', sender: '+16175550105', api: true },
  ];

  const actions: Action[] = [];
  // a worker SIGKILLed every few seconds, and restarted
  for (let t = between(2_000, 5_000); t < W; t += between(3_000, 7_000)) actions.push({ atMs: t, kind: 'kill_worker', worker: between(0, scale.workers - 1) });
  actions.push({ atMs: at(0.45, 0.6), kind: 'pg_restart', downMs: between(2_000, 4_000) });
  actions.push({ atMs: at(0.15, 0.3), kind: 'outage', durationMs: 20_000 });
  const packCredits = Math.max(50, Math.round(scale.recipients * 0.04));
  for (const org of ['acme', 'bloom', 'cobalt'] as const) {
    const purchases = between(2, 3);
    for (let i = 0; i < purchases; i++) actions.push({ atMs: at(0.1, 0.9), kind: 'purchase', org });
  }
  actions.push({ atMs: at(0.2, 0.35), kind: 'renewal' });
  actions.push({ atMs: at(0.7, 0.85), kind: 'renewal' });
  for (const org of ['acme', 'cobalt'] as const) {
    actions.push({ atMs: at(0.1, 0.8), kind: 'rollback', org, amount: Math.max(5, Math.round(audienceOf(org) * 0.03)), repeat: random() < 0.5 });
  }
  const cancelAt = at(0.3, 0.45);
  actions.push({ atMs: cancelAt, kind: 'subscription_cancel', org: 'bloom' });
  actions.push({ atMs: cancelAt + between(5_000, 10_000), kind: 'subscription_reactivate', org: 'bloom' });
  const disputeAt = at(0.05, 0.3);
  actions.push({ atMs: disputeAt, kind: 'dispute_open', org: 'cobalt' });
  actions.push({ atMs: disputeAt + between(5_000, 10_000), kind: 'dispute_close', org: 'cobalt' });
  const freezeAt = at(0.5, 0.7);
  actions.push({ atMs: freezeAt, kind: 'operator_freeze', org: 'acme' });
  actions.push({ atMs: freezeAt + between(3_000, 8_000), kind: 'operator_unfreeze', org: 'acme' });
  // an organization admin turns one workspace's SMS off for a while (its campaign pauses, then resumes)
  const disableAt = at(0.2, 0.6);
  actions.push({ atMs: disableAt, kind: 'workspace_disable', workspace: 'cobalt-store' });
  actions.push({ atMs: disableAt + between(3_000, 8_000), kind: 'workspace_enable', workspace: 'cobalt-store' });
  for (const key of ['acme-spring', 'cobalt-promo', 'acme-outlet']) {
    const storms = between(1, 2);
    for (let i = 0; i < storms; i++) actions.push({ atMs: at(0.05, 0.85), kind: 'storm', campaign: key, toggles: 2 * between(3, 6) });
  }
  for (const c of campaigns) {
    // STOPs from recipients near the end of the audience: still waiting when they arrive
    const seqs = Array.from({ length: between(5, 15) }, () => c.recipients - between(1, Math.max(2, Math.round(c.recipients * 0.3))));
    actions.push({ atMs: at(0.05, 0.5), kind: 'stop', campaign: c.key, seqs: [...new Set(seqs)].sort((a, b) => a - b) });
  }
  for (let i = 0; i < scale.apiSends; i++) actions.push({ atMs: at(0, 0.95), kind: 'api_send', index: i, copies: between(2, 3), concurrent: random() < 0.5 });
  // refunds, drawn last so that the schedule above stays what it was for a seed
  actions.push({ atMs: at(0.3, 0.8), kind: 'refund', org: 'bloom', payment: 'invoice', percent: between(10, 60) });
  actions.push({ atMs: at(0.3, 0.8), kind: 'refund', org: 'acme', payment: 'pack', percent: between(10, 60) });
  actions.sort((a, b) => a.atMs - b.atMs);

  return {
    seed,
    scale,
    orgs,
    workspaces,
    campaigns,
    packCredits,
    planCredits,
    faults: {
      latencyMs: { min: 0, max: 5 },
      // transient: 20429 and 5xx (6 %); permanent: 21211, 21614, 21610 (1.2 %)
      errors: { '20429': 0.03, '20503': 0.03, '21211': 0.005, '21614': 0.004, '21610': 0.003 },
      dropAfterAccept: 0.015,
      finalStatus: { undelivered: 0.02, failed: 0.005 },
      duplicateCallbacks: 0.05,
      reorderCallbacks: 0.05,
      loseFinalCallbacks: 0.01,
    },
    delivery: { duplicateRate: 0.25, reorderWindowMs: 400 },
    actions,
  };
}

/** A campaign recipient's phone (E.164), by 1-based seq. */
export function recipientPhone(c: CampaignPlan, seq: number): string {
  return `+1${c.area}${String(c.firstLine + seq - 1).padStart(7, '0')}`;
}

/** An API send's phone. */
export function apiPhone(index: number): string {
  return `+1212${String(3_000_000 + index).padStart(7, '0')}`;
}

/**
 * Recipients' time zones: fixed offsets where it is early afternoon at
 * `now`, one to three hours apart, so every legal and default window is
 * open; `seq` picks one. Offsets are whole hours: the quiet-hours check
 * needs no DST.
 */
export function zoneFor(seq: number, now: Date): string {
  const base = ((13 - now.getUTCHours() + 36) % 24) - 12;
  const offset = base + (seq % 3);
  const clamped = Math.max(-12, Math.min(14, offset));
  return clamped === 0 ? 'Etc/UTC' : clamped > 0 ? `Etc/GMT-${clamped}` : `Etc/GMT+${-clamped}`;
}
