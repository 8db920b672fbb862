/**
 * The simulator's shared state, and what the simulated carrier does with a
 * message after accepting it: move its status on (queued → sent → final)
 * and post signed status callbacks, duplicated or reordered when the fault
 * profile says so.
 */
import type http from 'node:http';
import type { Logger } from '../../shared/logger.ts';
import type { CallbackDelays, CallbackPlan, FaultProfile } from './faults.ts';
import { bump, type MessageLog, type SimStats } from './log.ts';
import { API_VERSION, countSegments, newSid, type SimMessage } from './resources.ts';
import type { WebhookPoster } from './webhooks.ts';

export interface SimAccount {
  sid: string;
  authToken: string;
}

export interface InboundSms {
  from: string;
  to: string;
  body: string;
  /** Defaults to the first account. */
  accountSid?: string;
  /** Reuse a sid to replay the same inbound message (webhook dedupe tests). */
  messageSid?: string;
}

export interface SimState {
  readonly accounts: ReadonlyMap<string, SimAccount>;
  readonly defaultAccount: SimAccount;
  faults: FaultProfile;
  readonly random: () => number;
  readonly delays: CallbackDelays;
  readonly log: MessageLog;
  stats: SimStats;
  /** Status callbacks. */
  readonly poster: WebhookPoster;
  /** Inbound messages, on connections of their own. */
  readonly inboundPoster: WebhookPoster;
  readonly inboundUrl: string | undefined;
  readonly logger: Logger | undefined;
  /** Responses held open on purpose (hangAfterAccept), destroyed on stop. */
  readonly hung: Set<http.ServerResponse>;
  /** ms since the simulator started (outage windows are relative to it). */
  elapsed(): number;
  /** A timer that stop() cancels. */
  later(ms: number, fn: () => void): void;
  setFaults(profile: FaultProfile): void;
  /** Forget the log and the counters. */
  reset(): void;
  sendInbound(sms: InboundSms): Promise<number>;
}

function callbackParams(m: SimMessage, status: string, errorCode: number | null): Record<string, string> {
  const params: Record<string, string> = {
    MessageSid: m.sid,
    SmsSid: m.sid,
    AccountSid: m.accountSid,
    From: m.from,
    To: m.to,
    MessageStatus: status,
    SmsStatus: status,
    ApiVersion: API_VERSION,
  };
  if (m.messagingServiceSid !== null) params.MessagingServiceSid = m.messagingServiceSid;
  if (errorCode !== null) params.ErrorCode = String(errorCode);
  return params;
}

/** Move an accepted message through its life and report each step to its StatusCallback. */
export function scheduleDelivery(state: SimState, m: SimMessage, plan: CallbackPlan, finalErrorCode: number | null): void {
  const token = state.accounts.get(m.accountSid)?.authToken ?? state.defaultAccount.authToken;
  const post = async (status: string, errorCode: number | null, duplicate: boolean) => {
    if (m.statusCallback === null) return;
    const params = callbackParams(m, status, errorCode);
    const times = duplicate ? 2 : 1;
    if (duplicate) state.stats.callbacks.duplicated++;
    for (let i = 0; i < times; i++) {
      state.stats.callbacks.posted++;
      const ok = await state.poster.deliver(m.statusCallback, params, token, `${m.sid}-${status}`);
      if (!ok) {
        state.stats.callbacks.gaveUp++;
        state.logger?.warn({ sid: m.sid, status, url: m.statusCallback }, 'simulator gave up on a status callback');
      }
    }
  };
  const touch = () => {
    m.updatedAt = new Date().toISOString();
  };
  let sentDone: Promise<void> | undefined;
  let releaseSent: (() => void) | undefined;
  const sentHeld = new Promise<void>((resolve) => {
    releaseSent = resolve;
  });

  state.later(plan.sentDelayMs, () => {
    if (m.status === 'queued') {
      m.status = 'sent';
      touch();
    }
    // Reordered: the `sent` callback waits until the final one has been posted.
    sentDone = (plan.reorder ? sentHeld : Promise.resolve()).then(() => post('sent', null, plan.duplicateSent));
  });
  state.later(plan.sentDelayMs + plan.finalDelayMs, () => {
    m.status = m.finalStatus;
    m.errorCode = finalErrorCode;
    touch();
    state.stats.finalStatus[m.finalStatus]++;
    if (plan.loseFinal) {
      // the carrier knows the final status (a look-up sees it); the callback never comes
      state.stats.callbacks.lost++;
      releaseSent?.();
    } else if (plan.reorder) {
      state.stats.callbacks.reordered++;
      void post(m.status, m.errorCode, plan.duplicateFinal).finally(() => releaseSent?.());
    } else {
      // In order: the final callback follows the `sent` one, never overtakes it.
      void (sentDone ?? Promise.resolve()).then(() => post(m.finalStatus, m.errorCode, plan.duplicateFinal));
    }
  });
}

/** Post a signed inbound-SMS webhook, as Twilio does when a handset texts one of our numbers. */
export async function postInbound(state: SimState, sms: InboundSms): Promise<number> {
  if (state.inboundUrl === undefined) throw new Error('the carrier simulator was started without an inboundUrl');
  const account = sms.accountSid === undefined ? state.defaultAccount : state.accounts.get(sms.accountSid);
  if (account === undefined) throw new Error(`unknown simulator account ${sms.accountSid}`);
  const sid = sms.messageSid ?? newSid('SM');
  const params: Record<string, string> = {
    MessageSid: sid,
    SmsMessageSid: sid,
    SmsSid: sid,
    AccountSid: account.sid,
    From: sms.from,
    To: sms.to,
    Body: sms.body,
    NumSegments: String(countSegments(sms.body)),
    NumMedia: '0',
    SmsStatus: 'received',
    ApiVersion: API_VERSION,
  };
  try {
    const status = await state.inboundPoster.post(state.inboundUrl, params, account.authToken, `${sid}-inbound`);
    state.stats.inbound.posted++;
    return status;
  } catch (err) {
    state.stats.inbound.failed++;
    throw err;
  }
}

export const recordRejection = (state: SimState, code: number, injected: boolean) => {
  bump(state.stats.rejected, code);
  if (injected) bump(state.stats.injected, code);
};
