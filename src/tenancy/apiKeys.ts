import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiKeyScope } from '../db/schema.ts';

/**
 * API keys look like `crd_ws_<43 chars>`: a recognisable prefix naming the
 * scope, then 32 random bytes in base64url. The row is found by the first
 * characters (`prefix`), and the key is checked against its SHA-256 hash;
 * the key itself is shown once and never stored.
 */
const SCOPE_TAG: Record<ApiKeyScope, string> = {
  operator: 'op',
  organization: 'org',
  workspace: 'ws',
};
const KEY_RE = /^crd_(op|org|ws)_([A-Za-z0-9_-]{43})$/;
const LOOKUP_CHARS = 12;

export interface NewApiKey {
  plaintext: string;
  prefix: string;
  hash: Buffer;
}

export function hashApiKey(plaintext: string): Buffer {
  return createHash('sha256').update(plaintext).digest();
}

export function generateApiKey(scope: ApiKeyScope): NewApiKey {
  const secret = randomBytes(32).toString('base64url');
  const plaintext = `crd_${SCOPE_TAG[scope]}_${secret}`;
  return { plaintext, prefix: lookupPrefix(plaintext), hash: hashApiKey(plaintext) };
}

function lookupPrefix(plaintext: string): string {
  const tagEnd = plaintext.indexOf('_', 4) + 1;
  return plaintext.slice(0, tagEnd + LOOKUP_CHARS);
}

/** The lookup prefix of a well-formed key, or undefined for anything else. */
export function parseApiKey(plaintext: string): { prefix: string } | undefined {
  if (!KEY_RE.test(plaintext)) return undefined;
  return { prefix: lookupPrefix(plaintext) };
}

export function apiKeyMatches(plaintext: string, storedHash: Buffer): boolean {
  const hash = hashApiKey(plaintext);
  return storedHash.length === hash.length && timingSafeEqual(hash, storedHash);
}

/** `Authorization: Bearer <key>` → the key, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}
