/**
 * Posting signed webhooks (status callbacks, inbound SMS) the way Twilio
 * does: form-encoded, X-Twilio-Signature over the exact URL and the fields.
 * A failed delivery never throws into the simulator: it is retried with
 * backoff and then given up, and counted.
 */
import http from 'node:http';
import https from 'node:https';
import { twilioSignature } from '../signature.ts';

export interface WebhookPoster {
  /** One signed POST; resolves with the HTTP status, rejects on a transport error. */
  post(url: string, params: Record<string, string>, authToken: string, idempotencyToken: string): Promise<number>;
  /** POST until a 2xx or `attempts` tries; resolves true if it got through. Never rejects. */
  deliver(url: string, params: Record<string, string>, authToken: string, idempotencyToken: string): Promise<boolean>;
  close(): void;
}

export interface PosterOptions {
  attempts: number;
  /** First retry delay; doubles each time. */
  backoffMs: number;
  timeoutMs: number;
  onAttempt?: (ok: boolean, status: number | string) => void;
}

export function createWebhookPoster(options: PosterOptions): WebhookPoster {
  const agents = {
    http: new http.Agent({ keepAlive: true, maxSockets: 64, timeout: 30_000 }),
    https: new https.Agent({ keepAlive: true, maxSockets: 64, timeout: 30_000 }),
  };
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;

  const post = (url: string, params: Record<string, string>, authToken: string, idempotencyToken: string) =>
    new Promise<number>((resolve, reject) => {
      const target = new URL(url);
      const body = new URLSearchParams(params).toString();
      const secure = target.protocol === 'https:';
      const req = (secure ? https : http).request(target, {
        method: 'POST',
        agent: secure ? agents.https : agents.http,
        timeout: options.timeoutMs,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
          'user-agent': 'TwilioProxy/1.1',
          'i-twilio-idempotency-token': idempotencyToken,
          'x-twilio-signature': twilioSignature(authToken, url, params),
        },
      });
      req.on('timeout', () => req.destroy(new Error(`webhook timed out after ${options.timeoutMs} ms`)));
      req.on('error', reject);
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      });
      req.end(body);
    });

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });

  const deliver = async (url: string, params: Record<string, string>, authToken: string, token: string) => {
    for (let attempt = 0; attempt < options.attempts && !closed; attempt++) {
      if (attempt > 0) await sleep(options.backoffMs * 2 ** (attempt - 1));
      if (closed) break;
      try {
        const status = await post(url, params, authToken, token);
        const ok = status >= 200 && status < 300;
        options.onAttempt?.(ok, status);
        if (ok) return true;
      } catch (err) {
        options.onAttempt?.(false, (err as NodeJS.ErrnoException).code ?? String(err));
      }
    }
    return false;
  };

  return {
    post,
    deliver,
    close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}
