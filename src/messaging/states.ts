/**
 * The message state machine (pure). Every change of a message's status goes
 * through `transition`, and every store UPDATE is conditional on the `from`
 * status it was planned from, so concurrent actors (worker, status callback,
 * reconciliation) can never move a message backwards or twice.
 */
export const MESSAGE_STATUSES = [
  'planned',
  'queued',
  'sending',
  'sent',
  'delivered',
  'undelivered',
  'deferred',
  'blocked',
  'skipped',
  'failed',
  'unknown',
] as const;
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

/** Nothing moves a message out of these. */
export const TERMINAL: ReadonlySet<MessageStatus> = new Set(['delivered', 'undelivered', 'skipped', 'failed']);
/** Done from the sender's point of view: the carrier has it, or it ended. */
export const SETTLED: ReadonlySet<MessageStatus> = new Set(['sent', 'delivered', 'undelivered', 'skipped', 'failed']);

export const MESSAGE_EVENTS = {
  /** dispatch reserved the credits */
  reserved: { from: ['planned', 'deferred', 'blocked'], to: 'queued' },
  /** dispatch could not proceed: no credits, gate closed */
  block: { from: ['planned', 'deferred', 'queued'], to: 'blocked' },
  /** outside a send window or a rate limit: wait until next_attempt_at */
  defer: { from: ['planned', 'queued', 'blocked', 'deferred'], to: 'deferred' },
  /** will never be sent (no consent, invalid, cancelled, …) */
  skip: { from: ['planned', 'queued', 'deferred', 'blocked'], to: 'skipped' },
  /** the single conditional UPDATE that lets one worker send it */
  claim: { from: ['queued'], to: 'sending' },
  /** the gate closed between reservation and claim (pause, freeze, debt) */
  claim_refused: { from: ['queued'], to: 'blocked' },
  /** a claimed message waiting for its rate slot saw a gate close before the carrier call: never sent */
  withdrawn_block: { from: ['sending'], to: 'blocked' },
  withdrawn_skip: { from: ['sending'], to: 'skipped' },
  /** the carrier answered: accepted */
  accepted: { from: ['sending', 'unknown'], to: 'sent' },
  /** the carrier answered with a permanent error, or retries ran out */
  rejected: { from: ['sending', 'unknown'], to: 'failed' },
  /** transient error or circuit open: try again later */
  retry: { from: ['sending'], to: 'queued' },
  /** no answer after the request left: outcome unknown */
  no_answer: { from: ['sending'], to: 'unknown' },
  /** lease expired and the carrier has no trace of it: safe to send again */
  not_at_carrier: { from: ['sending', 'unknown'], to: 'queued' },
  /** status callback or look-up: the carrier reports it sent */
  carrier_sent: { from: ['sending', 'unknown'], to: 'sent' },
  carrier_delivered: { from: ['sending', 'unknown', 'sent'], to: 'delivered' },
  carrier_undelivered: { from: ['sending', 'unknown', 'sent'], to: 'undelivered' },
  /** 24 h without evidence: given up, charged (we may have been), never resent */
  outcome_unknown: { from: ['unknown'], to: 'failed' },
} as const satisfies Record<string, { from: readonly MessageStatus[]; to: MessageStatus }>;

export type MessageEvent = keyof typeof MESSAGE_EVENTS;

export type Transition = { ok: true; from: MessageStatus; to: MessageStatus } | { ok: false; from: MessageStatus; event: MessageEvent };

export function transition(from: MessageStatus, event: MessageEvent): Transition {
  const rule = MESSAGE_EVENTS[event];
  return (rule.from as readonly MessageStatus[]).includes(from) ? { ok: true, from, to: rule.to } : { ok: false, from, event };
}

/** The statuses an event may start from (the WHERE of its conditional UPDATE). */
export function sourcesOf(event: MessageEvent): readonly MessageStatus[] {
  return MESSAGE_EVENTS[event].from;
}

export function targetOf(event: MessageEvent): MessageStatus {
  return MESSAGE_EVENTS[event].to;
}

/** Twilio's status words → our events (for callbacks and look-ups). */
export function eventForCarrierStatus(status: string): MessageEvent | undefined {
  switch (status) {
    case 'queued':
    case 'accepted':
    case 'sending':
    case 'sent':
    case 'scheduled':
      return 'carrier_sent';
    case 'delivered':
    case 'read':
    case 'partially_delivered': // some parts of a multi-part message reached the handset
      return 'carrier_delivered';
    case 'undelivered':
    case 'failed':
    case 'canceled': // a message scheduled at the carrier and cancelled there: it never went out
      return 'carrier_undelivered';
    // receiving / received are inbound statuses: no outbound message of ours has them
    default:
      return undefined;
  }
}
