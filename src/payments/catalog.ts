/**
 * What can be bought (pure data; configurable through BILLING_CATALOG).
 * Money is integer minor units plus a currency; credits are integers.
 */
export interface Pack {
  id: string;
  name: string;
  credits: number;
  amount: number;
  currency: string;
}
export interface Plan {
  id: string;
  name: string;
  /** allowance granted at each renewal (replaces the previous one) */
  monthlyCredits: number;
  amount: number;
  currency: string;
}
export interface Catalog {
  packs: Pack[];
  plans: Plan[];
}

export const DEFAULT_CATALOG: Catalog = {
  packs: [
    { id: 'starter', name: 'Starter', credits: 100, amount: 300, currency: 'eur' },
    { id: 'standard', name: 'Standard', credits: 500, amount: 1250, currency: 'eur' },
    { id: 'large', name: 'Large', credits: 2000, amount: 4000, currency: 'eur' },
  ],
  plans: [
    { id: 'free', name: 'Free', monthlyCredits: 0, amount: 0, currency: 'eur' },
    { id: 'pro', name: 'Pro', monthlyCredits: 100, amount: 900, currency: 'eur' },
    { id: 'ultra', name: 'Ultra', monthlyCredits: 500, amount: 2900, currency: 'eur' },
  ],
};

/** Credits a refund takes back: the refunded share of what was bought, rounded up (never leave refunded credits behind). */
export function clawbackCredits(credits: number, amount: number, refundedAmount: number): number {
  if (amount <= 0) return 0;
  const share = Math.min(refundedAmount, amount);
  return Math.min(credits, Math.ceil((credits * share) / amount));
}
