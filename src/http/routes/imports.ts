import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import * as contacts from '../../contacts/index.ts';
import { validationError } from '../../shared/errors.ts';
import { decodeCursor, encodeCursor, pageRequest, toPage } from '../../shared/pagination.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id, PageOf } from '../schemas.ts';
import { workspaceScope } from './consent.ts';
import { sendProblem } from '../problem.ts';
import { IdParam, PagedQ, Q, WorkspaceQuery } from './contacts.ts';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

const Status = Type.Unsafe<contacts.ImportStatus>(Type.String({ enum: [...contacts.IMPORT_STATUSES] }));
const Import = Type.Object({
  id: Type.String(),
  workspace_id: Type.String(),
  status: Status,
  list_id: Nullable(Type.String()),
  default_country: Nullable(Type.String()),
  mapping: Type.Record(Type.String(), Type.String(), { description: 'CSV header → field, as applied' }),
  rows_total: Type.Integer({ description: 'data rows in the file (header excluded)' }),
  rows_done: Type.Integer(),
  rows_imported: Type.Integer({ description: 'rows that created a contact' }),
  rows_merged: Type.Integer({ description: 'rows merged into an existing contact (earlier, or earlier in the file)' }),
  rows_invalid: Type.Integer(),
  consents_recorded: Type.Integer(),
  error: Nullable(Type.String()),
  created_at: Type.String(),
  finished_at: Nullable(Type.String()),
});
const ImportError = Type.Object({
  row_number: Type.Integer({ description: 'the header is row 1' }),
  field: Nullable(Type.String()),
  reason: Type.String(),
  message: Type.String(),
});


export function importRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  return async (app) => registerImports(deps, app);
}

/** CSV imports: the upload streams into the database; the `contact_import` job parses it. */
function registerImports(deps: AppDeps, app: Parameters<FastifyPluginAsyncTypebox>[0]): void {
  const { db } = deps;
  const tags = ['contacts'];
  // The body reaches the handler as the raw stream (this plugin only): it is never buffered whole.
  app.addContentTypeParser('text/csv', (_request, payload, done) => done(null, payload));

  app.post(
    '/v1/contacts/imports',
    {
      bodyLimit: contacts.MAX_UPLOAD_BYTES,
      // before the body is read: only text/csv is streamed (the app's JSON or text parsers would hold up to 1 GiB)
      onRequest: async (request, reply) => {
        const type = (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (type !== 'text/csv') {
          return sendProblem(reply, request, 'malformed_request', {
            status: 415,
            detail: `The file must be sent as Content-Type: text/csv${type === '' ? '' : `, not ${type}`}. Nothing was stored.`,
            fields: [{ field: 'content-type', in: 'headers', reason: 'must be text/csv' }],
          });
        }
        return undefined;
      },
      schema: {
        tags,
        summary: 'Import contacts from a CSV file (Content-Type: text/csv, up to 1 GiB): stored, then parsed by a job; 202 with the import',
        querystring: Type.Object(
          {
            ...WorkspaceQuery,
            mapping: Type.Optional(
              Type.String({
                maxLength: 20_000,
                description:
                  'JSON object, CSV header → phone, first_name, last_name, timezone, locale, consent_<purpose>, attributes.<name> or ignore. ' +
                  'Unmapped headers named like a field fill it; others become attributes.',
              }),
            ),
            list_id: Type.Optional(Id('lst')),
            default_country: Type.Optional(Type.String({ pattern: '^[A-Z]{2}$', description: 'for numbers written without +' })),
          },
          { additionalProperties: false },
        ),
        response: { 202: Import },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const actor = actorOf(request);
      const scope = await workspaceScope(db, actor.principal, q.workspace_id);
      const mapping = contacts.parseMapping(q.mapping);
      const body = (request.body ?? []) as AsyncIterable<Buffer | string>;
      const result = await contacts.receiveImport(db, scope, body, {
        actor: actor.principal.keyId,
        ...(mapping !== undefined && { mapping }),
        ...(q.list_id !== undefined && { listId: q.list_id }),
        ...(q.default_country !== undefined && { defaultCountry: q.default_country }),
      });
      if (result.outcome === 'too_large') {
        throw Object.assign(new Error(`The file is larger than ${result.maxBytes} bytes.`), { statusCode: 413 });
      }
      return reply.code(202).send(result.import);
    },
  );

  app.get(
    '/v1/contacts/imports',
    { schema: { tags, summary: 'Imports, newest first', querystring: PagedQ, response: { 200: PageOf(Import) } } },
    async (request) => {
      const scope = await workspaceScope(db, actorOf(request).principal, request.query.workspace_id);
      const page = pageRequest(request.query);
      return toPage(await contacts.listImports(db, scope.workspaceId, page), page, (r) => r.id, contacts.importRecordToImport);
    },
  );

  app.get(
    '/v1/contacts/imports/:id',
    { schema: { tags, summary: "An import's status and progress (rows_done of rows_total)", params: IdParam, querystring: Q, response: { 200: Import } } },
    async (request) => {
      const scope = await workspaceScope(db, actorOf(request).principal, request.query.workspace_id);
      return contacts.importRecordToImport(await contacts.getImport(db, scope.workspaceId, request.params.id));
    },
  );

  app.get(
    '/v1/contacts/imports/:id/errors',
    {
      schema: {
        tags,
        summary: "An import's refused rows, in file order",
        params: IdParam,
        querystring: PagedQ,
        response: { 200: PageOf(ImportError) },
      },
    },
    async (request) => {
      const scope = await workspaceScope(db, actorOf(request).principal, request.query.workspace_id);
      const imp = await contacts.getImport(db, scope.workspaceId, request.params.id);
      const cursor = decodeCursor(request.query.cursor);
      const after = cursor === undefined ? 0 : Number(cursor);
      // row numbers are int4: a larger one is no cursor of ours (and failed the query, a 500)
      if (!Number.isSafeInteger(after) || after < 0 || after > 2_147_483_647) throw validationError('cursor', 'is not a cursor returned by this API');
      const limit = request.query.limit ?? 50;
      const rows = await contacts.listImportErrors(db, imp.id, { limit, after });
      const data = rows.slice(0, limit).map((e) => ({
        ...e,
        message: `row ${e.row_number}: ${e.field === null ? '' : `${e.field}: `}${e.reason}`,
      }));
      return { data, next_cursor: rows.length > limit ? encodeCursor(String(data[data.length - 1]!.row_number)) : null };
    },
  );
}
