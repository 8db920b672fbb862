/**
 * Stripe's form encoding, as the official SDK writes it: nested keys in
 * brackets (`line_items[0][price_data][unit_amount]=500`, `metadata[org]=x`,
 * `expand[]=y`), every value a string, and an empty string meaning null.
 */

export type FormValue = string | FormValue[] | { [key: string]: FormValue };
export type FormObject = { [key: string]: FormValue };

const isObject = (v: FormValue | undefined): v is FormObject => typeof v === 'object' && !Array.isArray(v);

/** Split `a[b][0][]` into `['a', 'b', '0', '']`; undefined when the brackets do not balance. */
function splitKey(key: string): string[] | undefined {
  const open = key.indexOf('[');
  if (open === -1) return [key];
  const parts = [key.slice(0, open)];
  const rest = key.slice(open);
  const re = /\[([^[\]]*)\]/gy;
  let consumed = 0;
  for (let m = re.exec(rest); m !== null; m = re.exec(rest)) {
    parts.push(m[1] ?? '');
    consumed = re.lastIndex;
  }
  return consumed === rest.length && parts[0] !== '' ? parts : undefined;
}

/** Objects whose keys are exactly 0..n-1 become arrays (the SDK indexes arrays). */
function arrays(value: FormValue): FormValue {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return value.map(arrays);
  const keys = Object.keys(value);
  const indexed = keys.length > 0 && keys.every((k, i) => k === String(i));
  if (indexed) return keys.map((k) => arrays(value[k]!));
  return Object.fromEntries(keys.map((k) => [k, arrays(value[k]!)]));
}

/** Parse a form body or a query string; a malformed key is reported, not guessed at. */
export function parseForm(text: string): { ok: true; form: FormObject } | { ok: false; key: string } {
  const root: FormObject = {};
  for (const [key, value] of new URLSearchParams(text)) {
    const parts = splitKey(key);
    if (parts === undefined) return { ok: false, key };
    let node: FormObject = root;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const last = i === parts.length - 1;
      // `x[]` appends: give the element the next free index.
      const name = part === '' && i > 0 ? String(Object.keys(node).length) : part;
      if (last) {
        if (node[name] !== undefined && typeof node[name] !== 'string') return { ok: false, key };
        node[name] = value;
      } else {
        const next = node[name];
        if (next === undefined) node = node[name] = {};
        else if (isObject(next)) node = next;
        else return { ok: false, key };
      }
    }
  }
  return { ok: true, form: arrays(root) as FormObject };
}

export const str = (v: FormValue | undefined): string | undefined => (typeof v === 'string' ? v : undefined);
export const obj = (v: FormValue | undefined): FormObject | undefined => (isObject(v) ? v : undefined);
export const list = (v: FormValue | undefined): FormValue[] | undefined => (Array.isArray(v) ? v : undefined);

/** A non-negative integer written in decimal, as Stripe wants amounts. */
export function integer(v: FormValue | undefined): number | undefined {
  const s = str(v);
  return s !== undefined && /^\d{1,15}$/.test(s) ? Number(s) : undefined;
}

/** `true`/`false` as the SDK writes booleans. */
export function bool(v: FormValue | undefined): boolean | undefined {
  return v === 'true' ? true : v === 'false' ? false : undefined;
}
