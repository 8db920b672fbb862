/**
 * The one registry of domain error codes. Domain code throws or returns these;
 * only the HTTP layer maps them to status codes and problem+json.
 */
export const ERROR_CODES = {
  validation_error: { status: 422, title: 'The request is not valid' },
  number_refused: { status: 422, title: 'This destination number may not be texted' },
  malformed_request: { status: 400, title: 'The request could not be read' },
  unauthenticated: { status: 401, title: 'Authentication is required' },
  forbidden: { status: 403, title: 'This key may not do that' },
  not_found: { status: 404, title: 'Not found' },
  conflict: { status: 409, title: 'Conflict with the current state' },
  idempotency_conflict: {
    status: 409,
    title: 'The idempotency key was already used with a different request',
  },
  insufficient_credits: { status: 409, title: 'Not enough credits' },
  invalid_signature: { status: 403, title: 'The signature is not valid' },
  rate_limited: { status: 429, title: 'Too many requests' },
  service_unavailable: { status: 503, title: 'Service unavailable' },
  internal_error: { status: 500, title: 'Internal error' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface FieldError {
  /** JSON pointer or dotted name of the offending field, e.g. `/to` or `body`. */
  field: string;
  reason: string;
}

export class DomainError extends Error {
  readonly code: ErrorCode;
  readonly detail: string | undefined;
  readonly fields: FieldError[] | undefined;
  readonly extra: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    detail?: string,
    options: { fields?: FieldError[]; extra?: Record<string, unknown> } = {},
  ) {
    super(detail ?? ERROR_CODES[code].title);
    this.name = 'DomainError';
    this.code = code;
    this.detail = detail;
    this.fields = options.fields;
    this.extra = options.extra;
  }
}

export function validationError(field: string, reason: string): DomainError {
  return new DomainError('validation_error', `${field}: ${reason}`, {
    fields: [{ field, reason }],
  });
}

export function notFound(what: string): DomainError {
  return new DomainError('not_found', `${what} not found`);
}
