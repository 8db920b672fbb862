/**
 * Gates (pure): conditions re-checked at dispatch and again at claim, never
 * trusted from enqueue time (G6). Each returns the decision for one message
 * given a snapshot of the world read in the same transaction.
 */
export interface GateContext {
  organizationFrozen: boolean;
  workspaceSmsEnabled: boolean;
  /** Outstanding debt on the organization's credit account (any debt stops sending). */
  debt: number;
  /** The message's campaign is running (true for messages outside campaigns). */
  campaignRunning?: boolean;
  /** The organization's subscription allows sending (true without a subscription). */
  subscriptionOk?: boolean;
}

export type GateDecision = { pass: true } | { pass: false; action: 'block'; reason: string };

export function checkGates(ctx: GateContext): GateDecision {
  if (ctx.organizationFrozen) return { pass: false, action: 'block', reason: 'organization_frozen' };
  if (!ctx.workspaceSmsEnabled) return { pass: false, action: 'block', reason: 'workspace_disabled' };
  if (ctx.subscriptionOk === false) return { pass: false, action: 'block', reason: 'subscription_inactive' };
  if (ctx.debt > 0) return { pass: false, action: 'block', reason: 'debt_outstanding' };
  if (ctx.campaignRunning === false) return { pass: false, action: 'block', reason: 'campaign_paused' };
  return { pass: true };
}
