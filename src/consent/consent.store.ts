import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import type { ConsentAction, ConsentPurpose, ConsentSource } from './consent.ts';

/**
 * The consent log's SQL. Rows are only ever appended; every lookup goes by
 * the keyed hash of the number (`credence_phone_hash`), so an erased number
 * (plain number removed) still matches a later STOP.
 */
export interface ConsentEventRow {
  seq: number;
  organization_id: string;
  workspace_id: string;
  phone: string | null;
  purpose: ConsentPurpose;
  action: ConsentAction;
  source: ConsentSource;
  evidence: Record<string, unknown>;
  actor: string;
  occurred_at: Date;
  recorded_at: Date;
}

export interface NewConsentEvent {
  organization_id: string;
  workspace_id: string;
  phone: string;
  purpose: ConsentPurpose;
  action: ConsentAction;
  source: ConsentSource;
  evidence: Record<string, unknown>;
  actor: string;
  /** ISO time; defaults to now */
  occurred_at?: string;
}

export async function appendConsentEvents(db: DbOrTx, events: readonly NewConsentEvent[]): Promise<ConsentEventRow[]> {
  if (events.length === 0) return [];
  const { rows } = await sql<ConsentEventRow>`
    insert into consent_events (organization_id, workspace_id, phone_hash, phone, purpose, action, source, evidence, actor, occurred_at)
    select x.organization_id, x.workspace_id, credence_phone_hash(x.phone), x.phone, x.purpose, x.action, x.source,
      -- never in the future: a grant dated ahead would outrank a STOP that comes after it
      coalesce(x.evidence, '{}'::jsonb), x.actor, least(coalesce(x.occurred_at, now()), now())
    from jsonb_to_recordset(${JSON.stringify(events)}::jsonb) as x(organization_id text, workspace_id text, phone text, purpose text,
      action text, source text, evidence jsonb, actor text, occurred_at timestamptz)
    returning seq, organization_id, workspace_id, phone, purpose, action, source, evidence, actor, occurred_at, recorded_at`
    .execute(db);
  return rows;
}

/** A number's whole consent history in a workspace, in log order (when it happened, then when recorded). */
export async function consentHistory(db: DbOrTx, workspaceId: string, phone: string): Promise<ConsentEventRow[]> {
  const { rows } = await sql<ConsentEventRow>`
    select seq, organization_id, workspace_id, phone, purpose, action, source, evidence, actor, occurred_at, recorded_at
    from consent_events where workspace_id = ${workspaceId} and phone_hash = credence_phone_hash(${phone})
    order by occurred_at, seq`.execute(db);
  return rows;
}

/** The current state per purpose as the send path sees it (the SQL closed form). */
export async function sqlConsentStates(db: DbOrTx, workspaceId: string, phone: string): Promise<Record<ConsentPurpose, string>> {
  const { rows } = await sql<Record<ConsentPurpose, string>>`select
    credence_consent_state(${workspaceId}, ${phone}, 'marketing') as marketing,
    credence_consent_state(${workspaceId}, ${phone}, 'transactional') as transactional,
    credence_consent_state(${workspaceId}, ${phone}, 'appointment') as appointment,
    credence_consent_state(${workspaceId}, ${phone}, 'cart_recovery') as cart_recovery`.execute(db);
  return rows[0]!;
}

/** GDPR erasure: blank the plain number and the evidence; the keyed hash stays so a later STOP still matches. */
export async function eraseConsentEvents(db: DbOrTx, workspaceId: string, phone: string): Promise<number> {
  const r = await sql`update consent_events set phone = null, evidence = '{"erased": true}'::jsonb
    where workspace_id = ${workspaceId} and phone_hash = credence_phone_hash(${phone}) and phone is not null`.execute(db);
  return Number(r.numAffectedRows ?? 0);
}

/**
 * After an erasure the evidence of every consent is gone, so none can be
 * relied on: every purpose is revoked, recorded under the hash only.
 */
export async function revokeErased(db: DbOrTx, scope: { organizationId: string; workspaceId: string }, phone: string, actor: string): Promise<void> {
  await sql`insert into consent_events (organization_id, workspace_id, phone_hash, phone, purpose, action, source, evidence, actor, occurred_at)
    select ${scope.organizationId}, ${scope.workspaceId}, credence_phone_hash(${phone}), null, p, 'revoked', 'api', '{"erased": true}'::jsonb, ${actor}, now()
    from unnest(array['marketing', 'transactional', 'appointment', 'cart_recovery']) p`.execute(db);
}
