import { randomBytes } from 'node:crypto';

// Crockford base32: sortable as plain strings, no ambiguous letters.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

export type IdPrefix =
  | 'org'
  | 'ws'
  | 'key'
  | 'aud'
  | 'le'
  | 'rsv'
  | 'msg'
  | 'evt'
  | 'cmp'
  | 'alr'
  | 'in';

/**
 * A prefixed, time-sortable identifier: `<prefix>_<10 chars time><16 chars random>`.
 * Ids made later sort after ids made earlier (to the millisecond), which lets
 * lists paginate by id with a stable order.
 */
export function newId(prefix: IdPrefix, now: number = Date.now()): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomBytes(10);
  let rand = '';
  // 80 random bits -> 16 base32 chars (5 bits each)
  let acc = 0n;
  for (const b of bytes) acc = (acc << 8n) | BigInt(b);
  for (let i = 0; i < 16; i++) {
    rand = ALPHABET[Number(acc & 31n)] + rand;
    acc >>= 5n;
  }
  return `${prefix}_${time}${rand}`;
}

const ID_RE = /^[a-z]{2,4}_[0-9A-HJKMNP-TV-Z]{26}$/;

export function isId(value: string, prefix?: IdPrefix): boolean {
  if (!ID_RE.test(value)) return false;
  return prefix === undefined || value.startsWith(`${prefix}_`);
}
