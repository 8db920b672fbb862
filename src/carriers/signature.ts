import { createHmac } from 'node:crypto';

/**
 * Twilio's webhook signature (X-Twilio-Signature): base64 HMAC-SHA1, keyed by
 * the account's auth token, over the exact URL Twilio posts to followed by
 * every form field as name+value, in name order. The simulator signs with
 * this; the adapter checks with the SDK's own `validateRequest`, so a
 * mistake here fails the tests instead of cancelling out.
 */
export function twilioSignature(authToken: string, url: string, params: Readonly<Record<string, string>>): string {
  // Twilio sorts by plain code-unit order (the SDK uses Array#sort with no comparator).
  const data = Object.keys(params)
    .sort()
    .reduce((acc, name) => acc + name + params[name], url);
  return createHmac('sha1', authToken).update(Buffer.from(data, 'utf8')).digest('base64');
}
