/**
 * Sending limits (pure): per-phone frequency caps and the per-workspace
 * hourly cap for transactional and appointment messages. The claim step
 * reads the recent sends under a lock and asks these functions which
 * candidates may go.
 */
export type CapPurpose = 'transactional' | 'marketing' | 'appointment' | 'cart_recovery';

export interface FrequencyCap {
  count: number;
  hours: number;
}

export const DEFAULT_FREQUENCY_CAPS: Readonly<Partial<Record<CapPurpose, FrequencyCap>>> = {
  marketing: { count: 1, hours: 24 },
  cart_recovery: { count: 1, hours: 24 },
};

/** Purposes under the workspace's hourly cap (a host-app bug must not drain credits). */
export const HOURLY_CAPPED: ReadonlySet<CapPurpose> = new Set(['transactional', 'appointment']);
export const DEFAULT_HOURLY_CAP = 100;

/** The caps in force: the workspace's own settings (null = no cap for that purpose) over the defaults. */
export function effectiveFrequencyCaps(settings: Partial<Record<CapPurpose, FrequencyCap | null>>): Partial<Record<CapPurpose, FrequencyCap>> {
  const caps: Partial<Record<CapPurpose, FrequencyCap>> = { ...DEFAULT_FREQUENCY_CAPS };
  for (const [purpose, cap] of Object.entries(settings) as [CapPurpose, FrequencyCap | null][]) {
    if (cap === null) delete caps[purpose];
    else caps[purpose] = cap;
  }
  return caps;
}

export interface CapCandidate {
  id: string;
  phone: string;
  purpose: CapPurpose;
  /** System replies (HELP, opt-in questions) answer the person and are never capped. */
  exempt: boolean;
}

export interface RecentSend {
  phone: string;
  purpose: CapPurpose;
  claimedAt: Date;
}

/**
 * Frequency caps: walk the candidates in order; each one that would exceed
 * its phone's cap for its purpose (counting recent sends and the candidates
 * already let through) is refused.
 */
export function applyFrequencyCaps(
  candidates: readonly CapCandidate[],
  recent: readonly RecentSend[],
  caps: Partial<Record<CapPurpose, FrequencyCap>>,
  now: Date,
): { allowed: string[]; capped: string[] } {
  const allowed: string[] = [];
  const capped: string[] = [];
  const taken = new Map<string, number>();
  for (const c of candidates) {
    const cap = caps[c.purpose];
    if (c.exempt || cap === undefined) {
      allowed.push(c.id);
      continue;
    }
    const key = `${c.phone}\u0000${c.purpose}`;
    const since = now.getTime() - cap.hours * 3_600_000;
    const before = recent.filter((r) => r.phone === c.phone && r.purpose === c.purpose && r.claimedAt.getTime() > since).length;
    const now_ = taken.get(key) ?? 0;
    if (before + now_ >= cap.count) capped.push(c.id);
    else {
      taken.set(key, now_ + 1);
      allowed.push(c.id);
    }
  }
  return { allowed, capped };
}

export interface MinuteCount {
  minute: Date;
  sends: number;
}

/**
 * The hourly cap over a sliding hour of per-minute counters: the candidates
 * that fit go; the rest wait until enough of the oldest minutes leave the
 * hour to make room.
 */
export function applyHourlyCap(
  candidateIds: readonly string[],
  cap: number,
  lastHour: readonly MinuteCount[],
  now: Date,
): { allowed: string[]; deferred: string[]; retryAt: Date } {
  const used = lastHour.reduce((sum, m) => sum + m.sends, 0);
  const room = Math.max(0, cap - used);
  const allowed = candidateIds.slice(0, room);
  const deferred = candidateIds.slice(room);
  // Room for the first deferred one appears when the oldest minutes age out.
  const needed = used + allowed.length - cap + 1;
  let freed = 0;
  let retryAt = new Date(now.getTime() + 60_000);
  for (const m of [...lastHour].sort((a, b) => a.minute.getTime() - b.minute.getTime())) {
    freed += m.sends;
    if (freed >= needed) {
      retryAt = new Date(Math.max(m.minute.getTime() + 3_600_000 + 1_000, now.getTime() + 1_000));
      break;
    }
  }
  return { allowed, deferred, retryAt };
}
