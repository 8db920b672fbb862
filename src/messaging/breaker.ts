/**
 * A circuit breaker per carrier account (pure state + transitions). After
 * `threshold` consecutive transient failures it opens: sends are rescheduled
 * instead of attempted. After `cooldownMs` it lets one probe through
 * (half-open); a success closes it, a failure opens it again.
 */
export type BreakerState =
  | { state: 'closed'; failures: number }
  | { state: 'open'; until: number }
  | { state: 'half_open'; probeInFlight: boolean };

export interface BreakerConfig {
  threshold: number;
  cooldownMs: number;
}

export const DEFAULT_BREAKER: BreakerConfig = { threshold: 10, cooldownMs: 15_000 };

export const CLOSED: BreakerState = { state: 'closed', failures: 0 };

/** May a send go through now? Returns the state to keep (a probe marks itself in flight). */
export function breakerAllows(s: BreakerState, now: number): { allow: boolean; next: BreakerState; retryAt?: number } {
  switch (s.state) {
    case 'closed':
      return { allow: true, next: s };
    case 'open':
      if (now >= s.until) return { allow: true, next: { state: 'half_open', probeInFlight: true } };
      return { allow: false, next: s, retryAt: s.until };
    case 'half_open':
      if (s.probeInFlight) return { allow: false, next: s, retryAt: now + 1_000 };
      return { allow: true, next: { state: 'half_open', probeInFlight: true } };
    default: {
      const never: never = s;
      throw new Error(`unknown breaker state ${String(never)}`);
    }
  }
}

export function breakerRecord(
  s: BreakerState,
  result: 'success' | 'transient_failure',
  now: number,
  config: BreakerConfig = DEFAULT_BREAKER,
): BreakerState {
  if (result === 'success') return CLOSED;
  switch (s.state) {
    case 'closed':
      return s.failures + 1 >= config.threshold
        ? { state: 'open', until: now + config.cooldownMs }
        : { state: 'closed', failures: s.failures + 1 };
    case 'half_open':
    case 'open':
      return { state: 'open', until: now + config.cooldownMs };
    default: {
      const never: never = s;
      throw new Error(`unknown breaker state ${String(never)}`);
    }
  }
}
