import * as messaging from '../messaging/index.ts';
import { checkNumber } from '../sendrules/index.ts';
import { type ParsedPhone, parsePhone } from '../shared/phone.ts';

/** A campaign recipient rendered and checked: what it would cost, or why it is skipped for free. */
export type RecipientVerdict =
  | { skip: null; phone: Extract<ParsedPhone, { ok: true }>; priced: messaging.Priced }
  | { skip: string; phone: ParsedPhone };

/**
 * The one decision the advance (which creates the message `skipped` with the
 * reason), the quote and the preview share (pure): a number that does not
 * parse or may never be texted from this workspace, an empty body or one
 * over the limit is skipped and costs nothing; otherwise it is priced.
 * Consent is decided where the message is sent (dispatch and claim), so the
 * advance passes `consentOk: true`; the quote and the preview pass what the
 * consent log says now.
 */
export function judgeRecipient(
  rawPhone: string,
  body: string,
  context: { allowed: readonly string[]; priceList: messaging.PriceList | undefined; consentOk: boolean },
): RecipientVerdict {
  const phone = parsePhone(rawPhone);
  if (!phone.ok) return { skip: 'invalid_number', phone };
  const safety = checkNumber(phone, context.allowed);
  if (!safety.ok) return { skip: safety.reason, phone };
  if (body.trim() === '') return { skip: 'empty_body', phone };
  if (body.length > messaging.MAX_BODY && messaging.characterCount(body) > messaging.MAX_BODY) return { skip: 'body_too_long', phone };
  if (!context.consentOk) return { skip: 'no_consent', phone };
  return { skip: null, phone, priced: messaging.pricePhone(phone, body, context.priceList) };
}
