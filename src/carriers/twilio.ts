/**
 * The Twilio adapter: the Carrier port through the official SDK. With
 * `baseUrl` the SDK's requests go to the carrier simulator instead of
 * api.twilio.com, over the same SDK code path.
 */
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import twilio from 'twilio';
import type RequestClient from 'twilio/lib/base/RequestClient.js';
import type { Carrier, CarrierMessage, SendOutcome } from './carrier.ts';

export interface TwilioCarrierOptions {
  accountSid: string;
  authToken: string;
  /** e.g. the simulator's `http://127.0.0.1:<port>`; real Twilio when left out. */
  baseUrl?: string;
  /** Per request, from start to answer, including waiting for a free socket. Default 10 s. */
  timeoutMs?: number;
  /** Our public origin: relative StatusCallback / webhook URLs are resolved against it. */
  publicUrl?: string;
  /** Connections kept to the carrier. Default 50. */
  maxSockets?: number;
}

// Sockets whose connection (TCP, and TLS for https) was established. A
// request on such a socket may have been read by the carrier; a request that
// never got one cannot have been.
const connectedSockets = new WeakSet<object>();

class TrackingHttpAgent extends http.Agent {
  override createConnection(...args: Parameters<http.Agent['createConnection']>): Duplex | null | undefined {
    const socket = super.createConnection(...args);
    socket?.once('connect', () => connectedSockets.add(socket));
    return socket;
  }
}

class TrackingHttpsAgent extends https.Agent {
  override createConnection(...args: Parameters<http.Agent['createConnection']>): Duplex | null | undefined {
    const socket = super.createConnection(...args);
    socket?.once('secureConnect', () => connectedSockets.add(socket));
    return socket;
  }
}

const TWILIO_API = /^https:\/\/api(?:\.[a-z0-9-]+)*\.twilio\.com(?=[/?]|$)/i;

/**
 * The SDK's own RequestClient (axios, Basic auth, form encoding, error
 * bodies), with requests for api.twilio.com sent to `baseUrl`, and agents
 * that keep connections alive and record which sockets connected.
 */
class RoutedRequestClient extends twilio.RequestClient {
  readonly baseUrl: string | undefined;
  /** False behind HTTP_PROXY: the SDK's proxy agent does not tell us what connected. */
  readonly tracksConnections: boolean;

  constructor(baseUrl: string | undefined, timeoutMs: number, maxSockets: number) {
    super({ timeout: timeoutMs, keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
    this.baseUrl = baseUrl?.replace(/\/+$/, '');
    // Node honours a server's `Keep-Alive: timeout=` hint (retiring idle
    // sockets just before the server would) only when the agent has a longer
    // timeout of its own; that keeps us from writing to a socket the server is
    // closing, an ambiguous ECONNRESET. Requests in flight use axios' timeout.
    const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets, timeout: 60_000 };
    this.axios.defaults.httpAgent = new TrackingHttpAgent(agentOptions);
    this.tracksConnections = process.env.HTTP_PROXY === undefined || process.env.HTTP_PROXY === '';
    const sdkAgent: unknown = this.axios.defaults.httpsAgent;
    // Keep the CA bundle the SDK may have loaded from TWILIO_CA_BUNDLE.
    const ca = sdkAgent instanceof https.Agent ? sdkAgent.options.ca : undefined;
    if (this.tracksConnections) this.axios.defaults.httpsAgent = new TrackingHttpsAgent({ ...agentOptions, ca });
  }

  override request<TData>(opts: RequestClient.RequestOptions<TData>) {
    const uri = this.baseUrl === undefined ? opts.uri : opts.uri.replace(TWILIO_API, this.baseUrl);
    return super.request<TData>({ ...opts, uri });
  }
}

/** Build an SDK client whose requests go to `baseUrl` (the simulator) when given. */
export function createTwilioClient(options: TwilioCarrierOptions): twilio.Twilio {
  const httpClient = new RoutedRequestClient(options.baseUrl, options.timeoutMs ?? 10_000, options.maxSockets ?? 50);
  // autoRetry stays off: retrying a create is the send pipeline's decision, never the SDK's.
  return twilio(options.accountSid, options.authToken, { httpClient, autoRetry: false });
}

// Failures of name resolution or of the TCP handshake: nothing was written.
const CONNECT_PHASE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);
// Twilio statuses that mean the message will not go out.
const NOT_TAKEN = new Set(['failed', 'undelivered', 'canceled']);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** An error answer parsed by the SDK (RestException, or TwilioServiceException for RFC 9457 bodies). */
function errorAnswer(err: unknown): { status: number; code: number | null; message: string } | undefined {
  if (!(err instanceof Error) || (err as { isAxiosError?: unknown }).isAxiosError === true) return undefined;
  const { status, code } = err as { status?: unknown; code?: unknown };
  if (typeof status !== 'number') return undefined;
  return { status, code: typeof code === 'number' ? code : null, message: err.message };
}

/** The transport error code axios passed on, looking into AggregateError (happy eyeballs) too. */
function transportCode(err: Record<string, unknown>): string | undefined {
  if (typeof err.code === 'string') return err.code;
  const inner = isObject(err.cause) ? err.cause : Array.isArray(err.errors) && isObject(err.errors[0]) ? err.errors[0] : undefined;
  return inner !== undefined && typeof inner.code === 'string' ? inner.code : undefined;
}

/**
 * Transport failures (no HTTP answer). axios rejects with the Node error's
 * code and the ClientRequest as `request`:
 * - ECONNREFUSED / ENOTFOUND / EAI_AGAIN happen before a connection exists.
 * - ECONNABORTED (axios' own timeout, ETIMEDOUT with clarifyTimeoutError),
 *   ECONNRESET ("socket hang up") and EPIPE can happen before or after the
 *   request was written, so the code alone cannot tell. What tells is whether
 *   the request's socket had connected: our agents mark sockets on
 *   `connect` / `secureConnect`, and a request only writes once connected. A
 *   timeout while still waiting for a pooled socket or for the handshake is
 *   `not_sent`; on a connected socket (fresh or reused keep-alive) it is
 *   `unknown`, because the carrier may have read and acted on the request.
 * When we cannot know (no tracking behind a proxy) the answer is `unknown`:
 * that costs a look-up, where a wrong `not_sent` would cost a duplicate SMS.
 */
export function classifyTransportFailure(code: string | undefined, requestMayHaveLeft: boolean): SendOutcome {
  const what = code ?? 'transport error';
  if ((code !== undefined && CONNECT_PHASE.has(code)) || !requestMayHaveLeft)
    return { outcome: 'not_sent', reason: `${what} before the request could leave (no connection to the carrier)` };
  return { outcome: 'unknown', reason: `${what} after the request was sent: the carrier may have taken it` };
}

function mayHaveLeft(err: Record<string, unknown>, tracked: boolean): boolean {
  if (!tracked) return true;
  const socket = isObject(err.request) ? err.request.socket : undefined;
  return isObject(socket) && connectedSockets.has(socket);
}

/** What an SDK create call's failure means for the message. Throws what is a bug. */
export function classifySendError(err: unknown, tracked = true): SendOutcome {
  const answer = errorAnswer(err);
  if (answer !== undefined) {
    // A 5xx without a Twilio error body came from something in between (a
    // load balancer, a proxy), which cannot vouch that the API did not act.
    if (answer.code === null && answer.status >= 500)
      return { outcome: 'unknown', reason: `HTTP ${answer.status} without a Twilio error body` };
    return { outcome: 'rejected', errorCode: answer.code, httpStatus: answer.status, message: answer.message };
  }
  if (isObject(err) && err.isAxiosError === true) return classifyTransportFailure(transportCode(err), mayHaveLeft(err, tracked));
  // The answer came (2xx) but its body could not be read: the message may exist.
  if (err instanceof SyntaxError) return { outcome: 'unknown', reason: `unreadable answer: ${err.message}` };
  throw err;
}

const segmentsOf = (numSegments: string | null | undefined) => {
  const n = Number.parseInt(numSegments ?? '', 10);
  return Number.isFinite(n) ? n : null;
};

interface MessageLike {
  sid: string;
  to: string;
  from: string;
  body: string;
  status: string;
  errorCode: number | null;
  numSegments: string | null;
  dateCreated: Date;
}

const toCarrierMessage = (m: MessageLike): CarrierMessage => ({
  providerSid: m.sid,
  to: m.to,
  from: m.from,
  body: m.body,
  status: m.status,
  errorCode: m.errorCode ?? null,
  segments: segmentsOf(m.numSegments),
  dateCreated: m.dateCreated,
});

export function createTwilioCarrier(options: TwilioCarrierOptions): Carrier {
  const client = createTwilioClient(options);
  const tracked = (client.httpClient as RoutedRequestClient).tracksConnections;
  const absolute = (url: string) => {
    if (/^https?:\/\//i.test(url)) return url;
    if (options.publicUrl === undefined) throw new Error(`relative URL ${url} needs the publicUrl option`);
    return new URL(url, options.publicUrl).toString();
  };

  return {
    accountId: options.accountSid,

    async send(request) {
      const sender = /^MG[0-9a-f]{32}$/.test(request.from) ? { messagingServiceSid: request.from } : { from: request.from };
      try {
        const m = await client.messages.create({
          to: request.to,
          ...sender,
          body: request.body,
          statusCallback: absolute(request.statusCallbackUrl),
        });
        if (NOT_TAKEN.has(m.status))
          return { outcome: 'rejected', errorCode: m.errorCode ?? null, httpStatus: 201, message: m.errorMessage ?? `status ${m.status}` };
        return { outcome: 'accepted', providerSid: m.sid, providerStatus: m.status, segments: segmentsOf(m.numSegments) };
      } catch (err) {
        return classifySendError(err, tracked);
      }
    },

    async fetchMessage(providerSid) {
      try {
        return toCarrierMessage(await client.messages(providerSid).fetch());
      } catch (err) {
        if (errorAnswer(err)?.status === 404) return undefined;
        throw err;
      }
    },

    async findMessages({ to, from, since }) {
      // Twilio's dates have whole seconds, so the bound is rounded down.
      const floor = new Date(Math.floor(since.getTime() / 1000) * 1000);
      const filter = from === undefined ? { to } : { to, from };
      // Twilio fills date_sent only once a message leaves its queue, so a
      // DateSent filter alone would miss one still queued: the newest page
      // without a date filter covers those.
      const [bySentDate, newest] = await Promise.all([
        client.messages.list({ ...filter, dateSentAfter: floor, pageSize: 100 }),
        client.messages.list({ ...filter, limit: 50 }),
      ]);
      const found = new Map<string, CarrierMessage>();
      for (const m of [...bySentDate, ...newest])
        if (m.dateCreated.getTime() >= floor.getTime()) found.set(m.sid, toCarrierMessage(m));
      return [...found.values()].sort((a, b) => a.dateCreated.getTime() - b.dateCreated.getTime());
    },

    validateWebhook(url, params, signature) {
      if (signature === undefined || signature === '') return false;
      return twilio.validateRequest(options.authToken, signature, absolute(url), params);
    },
  };
}
