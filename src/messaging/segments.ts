/**
 * SMS segment counting (pure). GSM-7: 160 characters alone, 153 per part of a
 * concatenated message; the extension characters cost two septets. Any
 * character outside GSM-7 makes the whole message UCS-2: 70 code units alone,
 * 67 per part; characters outside the BMP (most emoji) are two code units.
 */

// GSM 03.38 basic character set (as Unicode).
const GSM_BASIC = new Set(
  [
    '@£$¥èéùìòÇ\nØø\rÅå',
    'Δ_ΦΓΛΩΠΨΣΘΞ\u001bÆæßÉ',
    ' !"#¤%&\'()*+,-./0123456789:;<=>?',
    '¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§',
    '¿abcdefghijklmnopqrstuvwxyzäöñüà',
  ]
    .join('')
    .split(''),
);
// Extension table: sent as ESC + char, so each counts as two septets.
const GSM_EXTENSION = new Set(['\f', '^', '{', '}', '\\', '[', '~', ']', '|', '€']);

export type Encoding = 'GSM-7' | 'UCS-2';

export interface SegmentInfo {
  encoding: Encoding;
  segments: number;
  /** Septets (GSM-7) or UTF-16 code units (UCS-2) the body occupies. */
  units: number;
}

export function isGsm7(body: string): boolean {
  for (const ch of body) {
    if (!GSM_BASIC.has(ch) && !GSM_EXTENSION.has(ch)) return false;
  }
  return true;
}

export function countSegments(body: string): SegmentInfo {
  if (isGsm7(body)) {
    let units = 0;
    for (const ch of body) units += GSM_EXTENSION.has(ch) ? 2 : 1;
    return { encoding: 'GSM-7', units, segments: units <= 160 ? 1 : Math.ceil(units / 153) };
  }
  const units = body.length; // JS strings are UTF-16: astral characters already count as 2
  return { encoding: 'UCS-2', units, segments: units <= 70 ? 1 : Math.ceil(units / 67) };
}
