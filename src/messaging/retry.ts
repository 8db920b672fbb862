/**
 * Retry policy (pure): exponential backoff 30 s·2ⁿ with ±20 % jitter, capped at
 * 5 minutes, at most 5 attempts in all. The base is configurable
 * (SEND_RETRY_BASE_MS, for runs on a simulated clock); the cap stays 10× it.
 */
export const MAX_ATTEMPTS = 5;
export const BASE_DELAY_MS = 30_000;
export const MAX_DELAY_MS = 5 * 60_000;
export const JITTER = 0.2;

/**
 * Delay before the next attempt after `attempts` failed attempts (1-based).
 * `random` in [0, 1) is injected so tests are deterministic.
 */
export function backoffMs(attempts: number, random: number, baseMs: number = BASE_DELAY_MS): number {
  const cap = baseMs * (MAX_DELAY_MS / BASE_DELAY_MS);
  const exponent = Math.max(0, attempts - 1);
  const base = Math.min(baseMs * 2 ** exponent, cap);
  const jitter = 1 + JITTER * (2 * random - 1);
  return Math.round(Math.min(base * jitter, cap));
}

export type RetryDecision = { retry: true; delayMs: number } | { retry: false; reason: 'attempts_exhausted' };

export function retryDecision(attempts: number, random: number): RetryDecision {
  return attempts >= MAX_ATTEMPTS
    ? { retry: false, reason: 'attempts_exhausted' }
    : { retry: true, delayMs: backoffMs(attempts, random) };
}
