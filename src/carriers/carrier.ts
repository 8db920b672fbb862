/**
 * The Carrier port: what the send pipeline needs from an SMS carrier. The
 * Twilio adapter implements it through the official SDK; in local runs and
 * tests that SDK talks to the carrier simulator over real HTTP.
 */

export interface SendRequest {
  /** Our message id, for logs; the status callback URL carries it too. */
  messageId: string;
  /** E.164 destination. */
  to: string;
  /** E.164 sender number (or alphanumeric sender id). */
  from: string;
  body: string;
  /** Where the carrier posts status callbacks for this message. */
  statusCallbackUrl: string;
}

/**
 * What one send attempt led to. The split that matters for correctness:
 * - `accepted`: the carrier took the message (Twilio `queued`, `accepted`,
 *   `sending` or `sent`).
 * - `rejected`: the carrier answered with an error, so it provably did not
 *   take the message; `errorCode` is the carrier's code (Twilio's `code`,
 *   e.g. 21211), `httpStatus` the HTTP status of the answer.
 * - `not_sent`: the request never left (connection refused, DNS, circuit
 *   open): safe to retry, nothing reached the carrier.
 * - `unknown`: the request may have reached the carrier but no answer came
 *   (timeout, connection reset after sending): never released, never resent
 *   blindly; a status callback or a look-up settles it.
 */
export type SendOutcome =
  | { outcome: 'accepted'; providerSid: string; providerStatus: string; segments: number | null }
  | { outcome: 'rejected'; errorCode: number | null; httpStatus: number; message: string }
  | { outcome: 'not_sent'; reason: string }
  | { outcome: 'unknown'; reason: string };

/** The carrier's view of one message (for reconciliation). */
export interface CarrierMessage {
  providerSid: string;
  to: string;
  from: string;
  body: string;
  /** Twilio status: queued, accepted, sending, sent, delivered, undelivered, failed, … */
  status: string;
  errorCode: number | null;
  segments: number | null;
  dateCreated: Date;
}

export interface Carrier {
  /** The carrier account this adapter sends through (circuit breakers are per account). */
  readonly accountId: string;
  send(request: SendRequest): Promise<SendOutcome>;
  /** Look a message up by the carrier's id; undefined if the carrier does not know it. */
  fetchMessage(providerSid: string): Promise<CarrierMessage | undefined>;
  /**
   * Messages the carrier holds for this destination (and sender) created at
   * or after `since`: how a crash between hand-off and recording the
   * carrier's id is settled when no callback arrives.
   */
  findMessages(query: { to: string; from?: string; since: Date }): Promise<CarrierMessage[]>;
  /**
   * Is this webhook really from the carrier? `url` is the full public URL the
   * carrier posted to, `params` the form fields, `signature` the header value
   * (X-Twilio-Signature).
   */
  validateWebhook(url: string, params: Record<string, string>, signature: string | undefined): boolean;
}
