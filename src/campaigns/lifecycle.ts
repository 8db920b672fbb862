/**
 * Campaign lifecycle (pure): draft → scheduled → running ⇄ paused →
 * completed, or cancelled from any state before completion. Every change
 * goes through `transition`; the store's UPDATE is conditional on the
 * legal sources, so concurrent callers cannot move a campaign twice.
 */
export const CAMPAIGN_STATUSES = ['draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled'] as const;
export type CampaignStatus = (typeof CAMPAIGN_STATUSES)[number];

export const CAMPAIGN_EVENTS = {
  schedule: { from: ['draft'], to: 'scheduled' },
  start: { from: ['draft', 'scheduled'], to: 'running' },
  pause: { from: ['running'], to: 'paused' },
  resume: { from: ['paused'], to: 'running' },
  complete: { from: ['running'], to: 'completed' },
  cancel: { from: ['draft', 'scheduled', 'running', 'paused'], to: 'cancelled' },
} as const satisfies Record<string, { from: readonly CampaignStatus[]; to: CampaignStatus }>;

export type CampaignEvent = keyof typeof CAMPAIGN_EVENTS;

export function campaignTransition(from: CampaignStatus, event: CampaignEvent): { ok: true; to: CampaignStatus } | { ok: false } {
  const rule = CAMPAIGN_EVENTS[event];
  return (rule.from as readonly CampaignStatus[]).includes(from) ? { ok: true, to: rule.to } : { ok: false };
}

/** Message statuses after which nothing more happens for the recipient (a campaign's "done"). */
export const RECIPIENT_DONE = ['sent', 'delivered', 'undelivered', 'failed', 'skipped'] as const;

/**
 * Error threshold: pause when the share of permanent failures among the last
 * (up to 500) sends passes it — once there are enough sends to judge (20).
 */
export function errorThresholdExceeded(recent: { failed: number; total: number }, threshold: number | null): boolean {
  if (threshold === null || recent.total < 20) return false;
  return recent.failed / recent.total > threshold;
}
