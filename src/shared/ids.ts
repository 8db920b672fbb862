import { randomFillSync } from 'node:crypto';

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
  | 'in'
  | 'num'
  | 'ct'
  | 'lst'
  | 'seg'
  | 'imp';

// Random bytes are drawn from the OS in blocks, not one syscall per id.
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let poolOffset = POOL_SIZE;

function randomChars(): string {
  if (poolOffset + 10 > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  // 80 random bits -> 16 base32 chars: two 40-bit halves, 8 chars each
  let out = '';
  for (let half = 0; half < 2; half++) {
    const o = poolOffset + half * 5;
    // 40 bits fit exactly in a double
    let v =
      pool[o]! * 2 ** 32 + ((pool[o + 1]! << 24) >>> 0) + (pool[o + 2]! << 16) + (pool[o + 3]! << 8) + pool[o + 4]!;
    let chunk = '';
    for (let i = 0; i < 8; i++) {
      chunk = ALPHABET[v % 32] + chunk;
      v = Math.floor(v / 32);
    }
    out += chunk;
  }
  poolOffset += 10;
  return out;
}

/** `value` in base32, `width` characters, zero-padded (the time part, an ordered id's position). */
function base32(value: number, width: number): string {
  let out = '';
  let v = value;
  for (let i = 0; i < width; i++) {
    out = ALPHABET[v % 32] + out;
    v = Math.floor(v / 32);
  }
  return out;
}

const timePart = (now: number): string => base32(now, 10);

/** The next base32 string of the same length (the random part plus one); wraps at the top. */
export function incrementBase32(value: string): string {
  const chars = value.split('');
  for (let i = chars.length - 1; i >= 0; i--) {
    const d = ALPHABET.indexOf(chars[i]!);
    if (d < 31) {
      chars[i] = ALPHABET[d + 1]!;
      return chars.join('');
    }
    chars[i] = ALPHABET[0]!;
  }
  return chars.join('');
}

// The last id's time and random part in this process: ids made within one
// millisecond (or while the clock stepped back) take the last time and the
// next random part, so that they sort in the order they were made.
let lastTime = -1;
let lastRandom = '';

/**
 * A prefixed, time-sortable identifier: `<prefix>_<10 chars time><16 chars random>`.
 * Within one process, an id made later sorts after every id made before it,
 * within a millisecond too (two contacts created in the same millisecond
 * were listed in either order), which lets lists paginate by id in the
 * order things were made.
 */
export function newId(prefix: IdPrefix, now: number = Date.now()): string {
  if (now <= lastTime) {
    lastRandom = incrementBase32(lastRandom);
  } else {
    lastTime = now;
    lastRandom = randomChars();
  }
  return `${prefix}_${timePart(lastTime)}${lastRandom}`;
}

/**
 * Ids for an ordered batch (a campaign's recipients): the same time part, a
 * 6-character stem shared by the whole series, and the position `n` in the
 * last 10 characters, so ids sort in `n` order within a millisecond too —
 * dispatch takes messages in id order, which keeps a campaign's paid-for
 * messages an exact prefix of its recipients.
 */
export function orderedId(prefix: IdPrefix, stem: string, n: number, now: number = Date.now()): string {
  return `${prefix}_${timePart(now)}${stem.slice(0, 6).padEnd(6, '0')}${base32(n, 10)}`;
}

const ID_RE = /^[a-z]{2,4}_[0-9A-HJKMNP-TV-Z]{26}$/;

export function isId(value: string, prefix?: IdPrefix): boolean {
  if (!ID_RE.test(value)) return false;
  return prefix === undefined || value.startsWith(`${prefix}_`);
}
