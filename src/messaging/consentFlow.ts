import * as consent from '../consent/index.ts';
import type { Db } from '../db/db.ts';
import { createSystemMessage, optInPrompt, workspaceTexts } from './replies.ts';

/**
 * Record consents from the API, and with double opt-in on, send the
 * confirmation question for each new marketing request — in the same
 * transaction, so a request exists if and only if its question goes out.
 */
export async function recordApiConsents(
  db: Db,
  scope: { organizationId: string; workspaceId: string; actor: string },
  items: readonly consent.ValidConsent[],
): Promise<(consent.RecordedConsent & { confirmation_message_id: string | null })[]> {
  return db.transaction().execute(async (trx) => {
    const ws = await workspaceTexts(trx, scope.workspaceId);
    const recorded = await consent.recordConsents(trx, { ...scope, doubleOptIn: ws.double_opt_in }, items);
    const out = [];
    for (const r of recorded) {
      let confirmationId: string | null = null;
      if (r.confirmationNeeded) {
        const request = r.events.find((e) => e.action === 'requested');
        const msg = await createSystemMessage(trx, {
          ...scope,
          to: r.phone,
          body: optInPrompt(ws),
          dedupeKey: `optin:${request?.seq ?? r.phone}`,
        });
        confirmationId = msg?.id ?? null;
      }
      out.push({ ...r, confirmation_message_id: confirmationId });
    }
    return out;
  });
}
