/**
 * Message pricing (pure): cost in credits = segments × the destination
 * country's multiplier. An organization may carry its own price list, which
 * overrides the default table country by country; a country in neither pays
 * the fallback (the worst case).
 */
export const DEFAULT_MULTIPLIERS: Readonly<Record<string, number>> = Object.freeze({
  US: 1,
  CA: 1,
  GB: 2,
  LT: 1,
  LV: 1,
  EE: 1,
  FI: 2,
  PL: 2,
  IE: 2,
  NL: 2,
  BE: 2,
  IT: 2,
  ES: 2,
  PT: 2,
  DE: 3,
  FR: 3,
  AT: 3,
  CH: 3,
  AU: 3,
  NZ: 3,
  SE: 2,
  DK: 2,
  NO: 2,
});
export const FALLBACK_MULTIPLIER = 3;

export interface PriceList {
  multipliers: Readonly<Record<string, number>>;
  fallback?: number;
}

export function multiplierFor(country: string, priceList?: PriceList): number {
  return (
    priceList?.multipliers[country] ??
    DEFAULT_MULTIPLIERS[country] ??
    priceList?.fallback ??
    FALLBACK_MULTIPLIER
  );
}

export function messageCost(segments: number, country: string, priceList?: PriceList): number {
  if (!Number.isSafeInteger(segments) || segments < 1) throw new RangeError(`segments must be ≥ 1, got ${segments}`);
  return segments * multiplierFor(country, priceList);
}
