import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';
import type { SendingRules, SendingRulesPatch } from './settings.ts';

export async function readRules(db: DbOrTx, workspaceId: string): Promise<SendingRules | undefined> {
  const { rows } = await sql<SendingRules>`select home_country, allowed_countries, send_windows, frequency_caps, hourly_cap,
      double_opt_in, help_text, opt_in_prompt
    from workspaces where id = ${workspaceId}`.execute(db);
  return rows[0];
}

/**
 * Apply a validated patch: absent fields keep their value; window and cap
 * maps merge per purpose (a window set to null goes back to the default; a
 * frequency cap set to null means no cap for that purpose).
 */
export async function updateRules(db: DbOrTx, workspaceId: string, patch: SendingRulesPatch): Promise<SendingRules | undefined> {
  const has = (k: keyof SendingRulesPatch) => Object.prototype.hasOwnProperty.call(patch, k);
  const { rows } = await sql<SendingRules>`update workspaces set
      allowed_countries = ${has('allowed_countries') ? sql`${patch.allowed_countries ?? null}::text[]` : sql`allowed_countries`},
      send_windows = send_windows || ${JSON.stringify(patch.send_windows ?? {})}::jsonb,
      frequency_caps = frequency_caps || ${JSON.stringify(patch.frequency_caps ?? {})}::jsonb,
      hourly_cap = ${has('hourly_cap') ? sql`${patch.hourly_cap ?? null}::int` : sql`hourly_cap`},
      double_opt_in = ${has('double_opt_in') ? sql`${patch.double_opt_in ?? false}` : sql`double_opt_in`},
      help_text = ${has('help_text') ? sql`${patch.help_text ?? null}` : sql`help_text`},
      opt_in_prompt = ${has('opt_in_prompt') ? sql`${patch.opt_in_prompt ?? null}` : sql`opt_in_prompt`}
    where id = ${workspaceId}
    returning home_country, allowed_countries, send_windows, frequency_caps, hourly_cap, double_opt_in, help_text, opt_in_prompt`.execute(db);
  return rows[0];
}
