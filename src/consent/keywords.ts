/**
 * Inbound keyword recognition (pure).
 *
 * The rule, in full:
 *   1. Normalise: NFKC (full-width → ASCII), drop apostrophes ("don't" → "dont"),
 *      strip diacritics, lower-case, then split into words on anything that is
 *      not a letter or a digit (spaces, punctuation, hyphens, emoji).
 *   2. Scan the words left to right. At each word, take the longest run of
 *      consecutive words that, joined, spells a keyword ("opt out", "opt-out",
 *      "un-subscribe", "stop all", "S T O P"); otherwise the word must be in
 *      FILLER_WORDS. Any other word means this is an ordinary reply: null.
 *   3. At least one keyword, and at most MAX_FILLER_WORDS filler words.
 *   4. Keywords of different kinds in one message: opt-out wins, then help,
 *      then opt-in. Honouring an opt-out by mistake is the cheap error; granting
 *      consent by mistake is the expensive one.
 *
 * So "stop please", "STOP 🙏" and "please stop texting me" are opt-outs, and
 * "Can I cancel my appointment tomorrow?" or "Don't stop" are not: "can",
 * "my", "dont" are not filler. The filler list holds only politeness, emphasis
 * and "texting me"-style objects; never a negation or a content word, because
 * each filler word added widens what counts as a keyword.
 */
export type Keyword = { kind: 'opt_out'; keyword: string } | { kind: 'opt_in'; keyword: string } | { kind: 'help'; keyword: string };
export type KeywordKind = Keyword['kind'];

/** Upper-case canonical spellings; `Keyword.keyword` is one of these. */
export const OPT_OUT_KEYWORDS = ['STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT', 'REVOKE', 'OPTOUT'] as const;
export const OPT_IN_KEYWORDS = ['START', 'UNSTOP', 'YES'] as const;
export const HELP_KEYWORDS = ['HELP', 'INFO'] as const;

/** Words that may surround a keyword without changing what it means. */
export const FILLER_WORDS: ReadonlySet<string> = new Set([
  'please', 'pls', 'plz', 'now', 'thanks', 'thank', 'you', 'thx', 'ty', 'ok', 'okay',
  'it', 'me', 'all', 'again', 'this', 'these',
  'text', 'texts', 'texting', 'message', 'messages', 'messaging', 'sms', 'sending',
]);

/** More than this many filler words and the message reads as free text. */
export const MAX_FILLER_WORDS = 4;

/** Checked in this order when a message holds keywords of several kinds (rule 4). */
const PRIORITY: readonly KeywordKind[] = ['opt_out', 'help', 'opt_in'];

const TABLE: ReadonlyMap<string, Keyword> = new Map(
  [
    ...OPT_OUT_KEYWORDS.map((keyword): Keyword => ({ kind: 'opt_out', keyword })),
    ...OPT_IN_KEYWORDS.map((keyword): Keyword => ({ kind: 'opt_in', keyword })),
    ...HELP_KEYWORDS.map((keyword): Keyword => ({ kind: 'help', keyword })),
  ].map((k) => [k.keyword.toLowerCase(), Object.freeze(k)] as const),
);

/** Bounds the run joined in rule 2, so a 1600-character message costs nothing. */
const MAX_KEYWORD_LENGTH = Math.max(...[...TABLE.keys()].map((k) => k.length));

/** Rule 1. Exported for tests and for logging what was matched against. */
export function normaliseWords(body: string): string[] {
  return body
    .normalize('NFKC')
    .replace(/['‘’`ʼ]/g, '')
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length > 0);
}

/** Classify an inbound SMS body; null when it is not a keyword message (ordinary replies are never treated as keywords). */
export function classifyInbound(body: string): Keyword | null {
  const words = normaliseWords(body);
  const found: Keyword[] = [];
  let fillers = 0;
  let i = 0;
  while (i < words.length) {
    const hit = keywordAt(words, i);
    if (hit) {
      found.push(hit.keyword);
      i = hit.next;
      continue;
    }
    if (!FILLER_WORDS.has(words[i] ?? '')) return null;
    fillers += 1;
    if (fillers > MAX_FILLER_WORDS) return null;
    i += 1;
  }
  for (const kind of PRIORITY) {
    const k = found.find((f) => f.kind === kind);
    if (k) return k;
  }
  return null;
}

/** The longest run of words starting at `start` that spells a keyword (rule 2). */
function keywordAt(words: readonly string[], start: number): { keyword: Keyword; next: number } | null {
  let joined = '';
  let best: { keyword: Keyword; next: number } | null = null;
  for (let j = start; j < words.length; j++) {
    joined += words[j];
    if (joined.length > MAX_KEYWORD_LENGTH) break;
    const keyword = TABLE.get(joined);
    if (keyword) best = { keyword, next: j + 1 };
  }
  return best;
}
