import { sql } from 'kysely';
import * as consent from '../consent/index.ts';
import type { Tx } from '../db/db.ts';
import * as store from './messages.store.ts';
import { releaseFor } from './reservations.ts';

/**
 * An opt-out (STOP, or the carrier's 21610): revoke every purpose for the
 * number in the workspace and skip every message to it not yet handed to
 * the carrier, in one transaction (G5). Skipping locks those rows, so a
 * claim that holds one commits first (it was claimed before the STOP) and
 * a claim that comes later finds the message skipped — and the claim's own
 * WHERE re-checks consent anyway.
 */
export async function applyOptOut(
  trx: Tx,
  input: {
    organizationId: string;
    workspaceId: string;
    phone: string;
    source: 'inbound_sms' | 'carrier_opt_out';
    evidence: Record<string, unknown>;
    actor: string;
    /** leave the credits of the skipped messages to the caller (who releases them after its other row locks) */
    deferRelease?: boolean;
  },
): Promise<{ skipped: number; waiting: Pick<store.MessageRow, 'organization_id' | 'reservation_id'>[] }> {
  await consent.appendConsentEvents(
    trx,
    consent.CONSENT_PURPOSES.map((purpose) => ({
      organization_id: input.organizationId,
      workspace_id: input.workspaceId,
      phone: input.phone,
      purpose,
      action: 'revoked' as const,
      source: input.source,
      evidence: input.evidence,
      actor: input.actor,
    })),
  );
  // Lock in id order, so two opt-outs for the same number cannot deadlock.
  const { rows } = await sql<store.MessageRow>`select * from messages
    where workspace_id = ${input.workspaceId} and to_number = ${input.phone}
      and status in ('planned', 'queued', 'deferred', 'blocked')
    order by id for update`.execute(trx);
  const moved = await store.applyEvent(
    trx,
    'skip',
    rows.map((m) => ({ id: m.id, patch: { reason: 'no_consent', reservation_id: null, details: { opt_out: input.source } } })),
  );
  const movedIds = new Set(moved.map((m) => m.id));
  const waiting = rows.filter((m) => movedIds.has(m.id));
  if (input.deferRelease) return { skipped: moved.length, waiting };
  await releaseFor(trx, waiting, 'recipient opted out');
  return { skipped: moved.length, waiting: [] };
}
