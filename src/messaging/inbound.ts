import { sql } from 'kysely';
import * as consent from '../consent/index.ts';
import type { Db } from '../db/db.ts';
import { newId } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import { parsePhone } from '../shared/phone.ts';
import { applyOptOut } from './optOut.ts';
import { createSystemMessage, helpText, workspaceTexts } from './replies.ts';

export type InboundResult =
  | { outcome: 'duplicate' }
  | { outcome: 'no_workspace'; inboundId: string }
  | { outcome: 'stored'; inboundId: string }
  | { outcome: 'opted_out'; inboundId: string; skipped: number }
  | { outcome: 'opted_in'; inboundId: string; purposes: consent.ConsentPurpose[] }
  | { outcome: 'help'; inboundId: string; replyId: string | null };

/**
 * POST /webhooks/twilio/inbound, after the signature was verified: store the
 * message once (the carrier's sid is unique, so a redelivery changes
 * nothing), then act on a keyword in the same transaction: STOP revokes
 * every purpose and skips what is waiting, START/UNSTOP/YES restore (and
 * confirm a pending double opt-in), HELP/INFO answer with the workspace's
 * help text.
 */
export async function handleInbound(deps: { db: Db; log: Logger }, params: Record<string, string>): Promise<InboundResult> {
  const sid = params.MessageSid ?? params.SmsMessageSid ?? '';
  const parsed = parsePhone(params.From ?? '');
  const from = parsed.ok ? parsed.e164 : (params.From ?? '');
  const to = params.To ?? '';
  const body = params.Body ?? '';
  return deps.db.transaction().execute(async (trx) => {
    // The workspace is the one that owns the number the person wrote to.
    const { rows } = await sql<{ id: string; organization_id: string | null; workspace_id: string | null }>`
      insert into inbound_messages (id, provider_sid, organization_id, workspace_id, from_number, to_number, body, payload)
      select ${newId('in')}, ${sid}, s.organization_id, s.workspace_id, ${from}, ${to}, ${body}, ${JSON.stringify(params)}::jsonb
      from (select 1) one left join lateral (
        select organization_id, workspace_id from sender_numbers where phone_number = ${to} order by created_at limit 1
      ) s on true
      on conflict (provider_sid) do nothing
      returning id, organization_id, workspace_id`.execute(trx);
    const row = rows[0];
    if (row === undefined) return { outcome: 'duplicate' };
    if (row.workspace_id === null || row.organization_id === null) return { outcome: 'no_workspace', inboundId: row.id };
    const keyword = consent.classifyInbound(body);
    if (keyword === null) return { outcome: 'stored', inboundId: row.id };
    await sql`update inbound_messages set keyword = ${keyword.keyword} where id = ${row.id}`.execute(trx);
    const scope = { organizationId: row.organization_id, workspaceId: row.workspace_id };
    const evidence = { inbound_message_id: row.id, provider_sid: sid, body, keyword: keyword.keyword };
    const log = deps.log.child({ organization_id: scope.organizationId, workspace_id: scope.workspaceId, inbound_id: row.id });
    switch (keyword.kind) {
      case 'opt_out': {
        const { skipped } = await applyOptOut(trx, { ...scope, phone: from, source: 'inbound_sms', evidence, actor: 'inbound_sms' });
        log.info({ keyword: keyword.keyword, skipped }, 'opt-out received');
        return { outcome: 'opted_out', inboundId: row.id, skipped };
      }
      case 'opt_in': {
        const history = await consent.consentHistory(trx, scope.workspaceId, from);
        const purposes = consent.optInPlan(consent.toEvents(history));
        await consent.appendConsentEvents(
          trx,
          purposes.map((purpose) => ({
            organization_id: scope.organizationId,
            workspace_id: scope.workspaceId,
            phone: from,
            purpose,
            action: 'granted' as const,
            source: 'inbound_sms' as const,
            evidence,
            actor: 'inbound_sms',
          })),
        );
        log.info({ keyword: keyword.keyword, purposes }, 'opt-in received');
        return { outcome: 'opted_in', inboundId: row.id, purposes };
      }
      case 'help': {
        // A sender we could not parse as a phone number (a short code, an alphanumeric id) cannot be
        // answered; its text is still stored (a refused reply used to roll the inbound message back).
        if (!parsed.ok) {
          log.info({ keyword: keyword.keyword }, 'HELP from a number that cannot be texted back; not answered');
          return { outcome: 'help', inboundId: row.id, replyId: null };
        }
        const ws = await workspaceTexts(trx, scope.workspaceId);
        const reply = await createSystemMessage(trx, {
          ...scope,
          to: from,
          from: to,
          body: helpText(ws),
          dedupeKey: `inbound:${sid}:help`,
        });
        return { outcome: 'help', inboundId: row.id, replyId: reply?.id ?? null };
      }
      default: {
        const never: never = keyword;
        throw new Error(`unhandled keyword ${String(never)}`);
      }
    }
  });
}
