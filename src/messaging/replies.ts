import { sql } from 'kysely';
import type { Tx } from '../db/db.ts';
import { newId } from '../shared/ids.ts';
import { DISPATCH_CHANNEL } from './dispatcher.ts';
import { allowedCountries, checkNumber } from '../sendrules/numberSafety.ts';
import { organizationPriceList, priceMessage, workspaceCountries } from './intake.ts';
import * as store from './messages.store.ts';
import { resolveSender } from './senders.ts';

/**
 * Messages Credence sends on its own (producer `system`): the answer to
 * HELP and the double opt-in question. They answer the person's own text or
 * request, so they need no marketing consent and ignore quiet hours, but
 * they are priced, paid for and sent through the same pipeline, and only to
 * numbers the workspace may text: a premium-rate or shared-cost number (the
 * way SMS-pumping fraud is paid), a fixed line or a country off the
 * allow-list gets no answer (undefined), as the API would refuse it.
 */
export async function createSystemMessage(
  trx: Tx,
  input: { organizationId: string; workspaceId: string; to: string; from?: string; body: string; dedupeKey: string },
): Promise<store.MessageRow | undefined> {
  const priced = priceMessage(input.to, input.body, await organizationPriceList(trx, input.organizationId));
  const safety = checkNumber({ e164: priced.to, country: priced.country, type: priced.type }, allowedCountries(await workspaceCountries(trx, input.workspaceId)));
  if (!safety.ok) return undefined;
  const from = input.from ?? (await resolveSender(trx, input.workspaceId));
  const [row] = await store.insertMessages(
    trx,
    [
      {
        id: newId('msg'),
        organization_id: input.organizationId,
        workspace_id: input.workspaceId,
        dedupe_key: input.dedupeKey,
        request_hash: null,
        producer: 'system',
        campaign_id: null,
        purpose: 'transactional',
        to_number: priced.to,
        country: priced.country,
        from_number: from,
        body: input.body,
        encoding: priced.encoding,
        segments: priced.segments,
        cost: priced.cost,
        send_at: new Date(),
      },
    ],
    'planned',
    { channel: DISPATCH_CHANNEL, organizationId: input.organizationId },
  );
  return row;
}

export interface WorkspaceTexts {
  name: string;
  help_text: string | null;
  opt_in_prompt: string | null;
  double_opt_in: boolean;
}

export async function workspaceTexts(trx: Tx, workspaceId: string): Promise<WorkspaceTexts> {
  const { rows } = await sql<WorkspaceTexts>`select name, help_text, opt_in_prompt, double_opt_in from workspaces where id = ${workspaceId}`.execute(trx);
  if (rows[0] === undefined) throw new Error(`workspace ${workspaceId} not found`);
  return rows[0];
}

export function helpText(ws: WorkspaceTexts): string {
  return ws.help_text ?? `${ws.name}: reply STOP to unsubscribe, START to subscribe again. Msg & data rates may apply.`;
}

export function optInPrompt(ws: WorkspaceTexts): string {
  return ws.opt_in_prompt ?? `${ws.name}: reply YES to receive marketing texts from us. Reply STOP to opt out. Msg & data rates may apply.`;
}
