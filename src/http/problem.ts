import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, ERROR_CODES, type ErrorCode, type FieldError } from '../shared/errors.ts';

/** The stable `type` of each problem: one URN per error code. */
export function problemType(code: ErrorCode): string {
  return `urn:credence:problem:${code.replaceAll('_', '-')}`;
}

interface ProblemOptions {
  detail?: string | undefined;
  fields?: (FieldError & { in?: string })[] | undefined;
  extra?: Record<string, unknown> | undefined;
  status?: number;
}

export function sendProblem(
  reply: FastifyReply,
  request: FastifyRequest,
  code: ErrorCode,
  options: ProblemOptions = {},
): FastifyReply {
  const status = options.status ?? ERROR_CODES[code].status;
  // a DomainError's own members first: the standard ones (status above all) are never overwritten
  const body: Record<string, unknown> = {
    ...options.extra,
    type: problemType(code),
    title: ERROR_CODES[code].title,
    status,
    ...(options.detail !== undefined && { detail: options.detail }),
    instance: request.url,
    request_id: request.id,
    ...(options.fields !== undefined && { errors: options.fields }),
  };
  return reply.code(status).type('application/problem+json').send(body);
}

interface AjvError {
  instancePath: string;
  message?: string;
  keyword: string;
  params: Record<string, unknown>;
}

/** `/items/0/amount` → `items.0.amount`; required/additional errors name the property itself. */
function fieldOf(error: AjvError): string {
  const base = error.instancePath.replace(/^\//, '').replaceAll('/', '.');
  const child =
    typeof error.params.missingProperty === 'string'
      ? error.params.missingProperty
      : typeof error.params.additionalProperty === 'string'
        ? error.params.additionalProperty
        : undefined;
  if (child === undefined) return base === '' ? '(root)' : base;
  return base === '' ? child : `${base}.${child}`;
}

function reasonOf(error: AjvError): string {
  if (error.keyword === 'additionalProperties') return 'is not a known field';
  if (error.keyword === 'required') return 'is required';
  return error.message ?? error.keyword;
}

export function errorHandler(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  if (error instanceof DomainError) {
    if (error.code === 'internal_error') request.log.error({ err: error }, 'internal error');
    const retryAfter = error.extra?.retry_after_seconds;
    if (typeof retryAfter === 'number') reply.header('retry-after', String(retryAfter));
    return sendProblem(reply, request, error.code, {
      detail: error.detail ?? error.message,
      fields: error.fields,
      extra: error.extra,
    });
  }
  if (error.validation) {
    const where = error.validationContext ?? 'body';
    const fields = (error.validation as AjvError[]).map((v) => ({
      field: fieldOf(v),
      in: where,
      reason: reasonOf(v),
    }));
    return sendProblem(reply, request, 'validation_error', {
      detail: fields.map((f) => `${f.field}: ${f.reason}`).join('; '),
      fields,
    });
  }
  const status = error.statusCode ?? 500;
  if (status === 429) return sendProblem(reply, request, 'rate_limited', { detail: error.message });
  if (status >= 400 && status < 500) {
    // Fastify's own client errors: malformed JSON, wrong content type, body too large.
    return sendProblem(reply, request, 'malformed_request', { detail: error.message, status });
  }
  request.log.error({ err: error }, 'unhandled error');
  return sendProblem(reply, request, 'internal_error', {
    detail: 'Something went wrong on our side; the request id identifies it in our logs.',
  });
}

/** A string PostgreSQL's text or jsonb cannot hold as it is, and why; undefined if none. */
function unstorableText(s: string): string | undefined {
  if (s.includes('\u0000')) return 'contains a NUL character (U+0000), which cannot be stored';
  // a UTF-16 half without its other half: jsonb refuses it (a 500), text turns it into U+FFFD (changed silently)
  if (LONE_SURROGATE.test(s)) return 'contains a lone UTF-16 surrogate (not a Unicode character), which cannot be stored';
  return undefined;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** Deeper than any value of ours needs; a deeper one overflowed the stack of the checks and of JSON.stringify (a 500). */
export const MAX_NESTING = 32;

/**
 * The first value in a parsed request part (JSON body, query, path
 * parameters) that could not be stored as it is, as a field path and a
 * reason; undefined if none. A string or object key holding U+0000 or a lone
 * UTF-16 surrogate (PostgreSQL refused those with a 500, or in a batch of
 * intakes failed the requests it shared a statement with, or replaced them
 * silently), or arrays and objects nested deeper than MAX_NESTING. Walked
 * without recursion, in document order. Buffers and other non-plain values
 * (a raw webhook body) are not walked.
 */
export function unstorableField(value: unknown): { field: string; reason: string } | undefined {
  // Every request passes here (two status callbacks per message among them):
  // a walk that builds no paths answers for the common value, and only a
  // value it doubts is walked again for the field and the reason.
  return mayBeUnstorable(value, 0) ? locateUnstorable(value) : undefined;
}

/** Any NUL or UTF-16 half (the halves of an emoji too); refined by unstorableText. */
const suspect = (s: string) => s.includes('\u0000') || SURROGATE.test(s);
const SURROGATE = /[\uD800-\uDFFF]/;

/** True if unstorableField may find something (recursion bounded by MAX_NESTING). */
function mayBeUnstorable(v: unknown, depth: number): boolean {
  if (typeof v === 'string') return suspect(v);
  if (typeof v !== 'object' || v === null) return false;
  if (Array.isArray(v)) {
    if (v.length > 0 && depth >= MAX_NESTING) return true;
    for (const item of v) if (mayBeUnstorable(item, depth + 1)) return true;
    return false;
  }
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== null && Object.getPrototypeOf(proto) !== null) return false;
  let any = false;
  for (const k in v) {
    if (!Object.hasOwn(v, k)) continue;
    if (!any && depth >= MAX_NESTING) return true;
    any = true;
    if (suspect(k) || mayBeUnstorable((v as Record<string, unknown>)[k], depth + 1)) return true;
  }
  return false;
}

function locateUnstorable(value: unknown): { field: string; reason: string } | undefined {
  const stack: { value: unknown; path: string; depth: number }[] = [{ value, path: '', depth: 0 }];
  const named = (path: string) => (path === '' ? '(root)' : path);
  while (stack.length > 0) {
    const { value: v, path, depth } = stack.pop()!;
    const at = (key: string) => (path === '' ? key : `${path}.${key}`);
    if (typeof v === 'string') {
      const reason = unstorableText(v);
      if (reason !== undefined) return { field: named(path), reason };
      continue;
    }
    if (typeof v !== 'object' || v === null) continue;
    const entries: [string, unknown][] = [];
    if (Array.isArray(v)) {
      for (const [i, item] of v.entries()) entries.push([String(i), item]);
    } else {
      // plain objects only: a JSON body (Object.prototype), a parsed query (a prototype-less prototype)
      const proto: unknown = Object.getPrototypeOf(v);
      if (proto !== null && Object.getPrototypeOf(proto) !== null) continue;
      for (const [k, item] of Object.entries(v)) {
        const reason = unstorableText(k);
        if (reason !== undefined) return { field: at(JSON.stringify(k).slice(1, -1)), reason: `its name ${reason}` };
        entries.push([k, item]);
      }
    }
    if (entries.length > 0 && depth >= MAX_NESTING) return { field: named(path), reason: `is nested deeper than ${MAX_NESTING} levels` };
    for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i]![1], path: at(entries[i]![0]), depth: depth + 1 });
  }
  return undefined;
}
