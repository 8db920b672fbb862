/**
 * Message templates (pure): `{{first_name}}`-style placeholders with an
 * optional fallback, `{{ first_name | there }}`. A placeholder names a
 * contact field (first_name, last_name, phone, locale) or one of its
 * attributes; a missing or empty value takes the fallback, or nothing.
 */
export type Variables = Record<string, unknown>;

type Part = { text: string } | { name: string; fallback: string };

const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:\|\s*([^}]*?)\s*)?\}\}/g;

export type ParsedTemplate = { ok: true; parts: Part[]; names: string[] } | { ok: false; reason: string };

export function parseTemplate(template: string): ParsedTemplate {
  const parts: Part[] = [];
  let last = 0;
  for (const m of template.matchAll(PLACEHOLDER)) {
    const before = template.slice(last, m.index);
    if (before.includes('{{') || before.includes('}}')) return { ok: false, reason: `malformed placeholder near "${before.slice(-20)}"` };
    if (before !== '') parts.push({ text: before });
    parts.push({ name: m[1]!, fallback: m[2] ?? '' });
    last = m.index + m[0].length;
  }
  const rest = template.slice(last);
  if (rest.includes('{{') || rest.includes('}}')) return { ok: false, reason: `malformed placeholder near "${rest.slice(0, 20)}"` };
  if (rest !== '') parts.push({ text: rest });
  const names = [...new Set(parts.flatMap((p) => ('name' in p ? [p.name] : [])))];
  return { ok: true, parts, names };
}

/** The variable's own value (never one inherited from Object.prototype: `{{constructor}}` rendered JavaScript source). */
const own = (vars: Variables, name: string): unknown => (Object.hasOwn(vars, name) ? vars[name] : undefined);

function lookup(vars: Variables, name: string): string {
  const value = own(vars, name) ?? (name.startsWith('attributes.') ? own(vars, name.slice('attributes.'.length)) : undefined);
  // a scalar renders as text; an object or array attribute has no text of its own
  if (typeof value === 'string') return value;
  return typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' ? String(value) : '';
}

export function render(parsed: Extract<ParsedTemplate, { ok: true }>, vars: Variables): string {
  let out = '';
  for (const p of parsed.parts) {
    if ('text' in p) out += p.text;
    else {
      const v = lookup(vars, p.name).trim();
      out += v === '' ? p.fallback : v;
    }
  }
  return out;
}
