/**
 * The JSON the simulator answers with, shaped like Twilio's 2010-04-01 API
 * so the official SDK parses it as it parses Twilio's.
 */
import { randomBytes } from 'node:crypto';

export const API_VERSION = '2010-04-01';

export type MessageStatus = 'queued' | 'sent' | 'delivered' | 'undelivered' | 'failed';

/** One message the simulator accepted: the ground truth the audits compare against. */
export interface SimMessage {
  sid: string;
  accountSid: string;
  to: string;
  from: string;
  body: string;
  statusCallback: string | null;
  messagingServiceSid: string | null;
  /** ISO 8601, to the millisecond. */
  acceptedAt: string;
  segments: number;
  /** The status now (it moves on as the simulated carrier delivers). */
  status: MessageStatus;
  /** The status it will end in, decided on acceptance. */
  finalStatus: 'delivered' | 'undelivered' | 'failed';
  errorCode: number | null;
  /** What became of the HTTP answer to the create call. */
  answer: 'answered' | 'dropped' | 'hung';
  /** True when the client never got the answer (dropped or hung). */
  answerDropped: boolean;
  updatedAt: string;
}

export function createdMessage(
  fields: Pick<SimMessage, 'accountSid' | 'to' | 'from' | 'body' | 'statusCallback' | 'messagingServiceSid' | 'finalStatus' | 'answer'>,
): SimMessage {
  const now = new Date().toISOString();
  return {
    sid: newSid('SM'),
    ...fields,
    acceptedAt: now,
    segments: countSegments(fields.body),
    status: 'queued',
    errorCode: null,
    answerDropped: fields.answer !== 'answered',
    updatedAt: now,
  };
}

export const newSid = (prefix: 'SM' | 'AC' | 'MM') => prefix + randomBytes(16).toString('hex');

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => String(n).padStart(2, '0');

/** RFC 2822 in UTC, as Twilio writes dates: `Thu, 24 Aug 2023 05:01:45 +0000`. */
export function rfc2822(date: Date): string {
  return (
    `${DAYS[date.getUTCDay()]}, ${pad(date.getUTCDate())} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`
  );
}

// GSM 03.38 basic set, and the extension set whose characters take two septets.
const GSM_BASIC =
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u001bÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà';
const GSM_EXTENDED = '^{}\\[~]|€\f';

/**
 * Segments as Twilio bills them without smart encoding: GSM-7 160 / 153 per
 * part, otherwise UCS-2 70 / 67 UTF-16 units. A small local counter on
 * purpose: the simulator must not share the product's code it is checking.
 */
export function countSegments(body: string): number {
  let septets = 0;
  for (const ch of body) {
    if (GSM_BASIC.includes(ch)) septets += 1;
    else if (GSM_EXTENDED.includes(ch)) septets += 2;
    else {
      const units = body.length;
      return units <= 70 ? 1 : Math.ceil(units / 67);
    }
  }
  return septets <= 160 ? 1 : Math.ceil(septets / 153);
}

export const messagesUri = (accountSid: string) => `/${API_VERSION}/Accounts/${accountSid}/Messages`;

export function messageResource(m: SimMessage): Record<string, unknown> {
  const created = rfc2822(new Date(m.acceptedAt));
  const base = `${messagesUri(m.accountSid)}/${m.sid}`;
  return {
    account_sid: m.accountSid,
    api_version: API_VERSION,
    body: m.body,
    date_created: created,
    // Real Twilio fills date_sent once the message leaves its queue; the
    // simulator sets it on acceptance so DateSent filters find every message.
    date_sent: created,
    date_updated: rfc2822(new Date(m.updatedAt)),
    direction: 'outbound-api',
    error_code: m.errorCode,
    error_message: m.errorCode === null ? null : `Simulated carrier error ${m.errorCode}`,
    from: m.from,
    messaging_service_sid: m.messagingServiceSid,
    num_media: '0',
    num_segments: String(m.segments),
    price: null,
    price_unit: 'USD',
    sid: m.sid,
    status: m.status,
    subresource_uris: { media: `${base}/Media.json`, feedback: `${base}/Feedback.json` },
    to: m.to,
    uri: `${base}.json`,
  };
}

const ERROR_MESSAGES: Record<number, string> = {
  20003: 'Authenticate',
  20404: 'The requested resource was not found',
  20429: 'Too Many Requests',
  20500: 'Internal Server Error',
  20503: 'Service Unavailable',
  21211: "The 'To' number is not a valid phone number.",
  21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number.",
  21602: 'Message body is required.',
  21603: "A 'From' phone number is required.",
  21604: "A 'To' phone number is required.",
  21609: 'Invalid StatusCallback url.',
  21610: 'Attempt to send to unsubscribed recipient',
  21612: "The 'To' phone number is not currently reachable using the 'From' phone number via SMS.",
  21614: "'To' number is not a valid mobile number",
};

export interface TwilioError {
  code: number;
  message: string;
  more_info: string;
  status: number;
}

export function twilioError(code: number, status: number, message?: string): TwilioError {
  return {
    code,
    message: message ?? ERROR_MESSAGES[code] ?? `Simulated error ${code}`,
    more_info: `https://www.twilio.com/docs/errors/${code}`,
    status,
  };
}
