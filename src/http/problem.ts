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
  const body: Record<string, unknown> = {
    type: problemType(code),
    title: ERROR_CODES[code].title,
    status,
    ...(options.detail !== undefined && { detail: options.detail }),
    instance: request.url,
    request_id: request.id,
    ...(options.fields !== undefined && { errors: options.fields }),
    ...options.extra,
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

/**
 * The first string, or object key, holding U+0000 in a parsed request part
 * (JSON body, query, path parameters), as a field path; undefined if none.
 * PostgreSQL's text and jsonb cannot hold that character: without this
 * check such a value reached the database and came back as a 500 (or, in a
 * batch of intakes, failed the requests it shared a statement with).
 * Buffers and other non-plain values (a raw webhook body) are not walked.
 */
export function nulField(value: unknown, path = ''): string | undefined {
  const at = (key: string) => (path === '' ? key : `${path}.${key}`);
  if (typeof value === 'string') return value.includes('\u0000') ? (path === '' ? '(root)' : path) : undefined;
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) {
      const found = nulField(v, at(String(i)));
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  // plain objects only: a JSON body (Object.prototype), a parsed query (a prototype-less prototype)
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== null && Object.getPrototypeOf(proto) !== null) return undefined;
  for (const [k, v] of Object.entries(value)) {
    if (k.includes('\u0000')) return at(JSON.stringify(k).slice(1, -1));
    const found = nulField(v, at(k));
    if (found !== undefined) return found;
  }
  return undefined;
}
