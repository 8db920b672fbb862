import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import * as contacts from '../../contacts/index.ts';
import { validationError } from '../../shared/errors.ts';
import { parsePhone } from '../../shared/phone.ts';
import { pageRequest, toPage } from '../../shared/pagination.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id, PageOf, PageQuery } from '../schemas.ts';
import { phoneParam, workspaceScope } from './consent.ts';

// Values are checked in the domain (string, number or boolean): a union here would let Ajv's type coercion
// turn `true` into "true" in its string branch.
const AttrValue = Type.Unsafe<contacts.AttributeValue>(Type.Unknown({ description: 'a string (≤ 1,000 characters), a number or a boolean' }));
const AttrValueOrNull = Type.Unsafe<contacts.AttributeValue | null>(
  Type.Unknown({ description: 'a string, a number, a boolean, or null to remove the key' }),
);
const Str = (maxLength: number) => Type.String({ minLength: 1, maxLength });
const NullableStr = (maxLength: number) => Type.Unsafe<string | null>({ type: ['string', 'null'], minLength: 1, maxLength });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

const Contact = Type.Object({
  id: Type.String(),
  workspace_id: Type.String(),
  phone: Type.String({ description: 'E.164' }),
  country: Type.String({ description: 'ISO 3166-1 alpha-2, from the number' }),
  first_name: Nullable(Type.String()),
  last_name: Nullable(Type.String()),
  timezone: Nullable(Type.String()),
  locale: Nullable(Type.String()),
  attributes: Type.Record(Type.String(), AttrValue),
  created_at: Type.String(),
  updated_at: Type.String(),
});
const ContactList = Type.Object({
  id: Type.String(),
  workspace_id: Type.String(),
  name: Type.String(),
  member_count: Type.Integer(),
  created_at: Type.String(),
});
const Filter = Type.Object(
  {
    countries: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z]{2}$' }), { maxItems: 250 })),
    timezones: Type.Optional(Type.Array(Str(64), { maxItems: 500 })),
    attributes: Type.Optional(Type.Record(Type.String(), Type.Array(AttrValue, { minItems: 1, maxItems: 100 }), { maxProperties: 50 })),
  },
  { additionalProperties: false, description: 'all conditions must hold; within one, any listed value matches' },
);
const Segment = Type.Object({ id: Type.String(), workspace_id: Type.String(), name: Type.String(), filter: Filter, created_at: Type.String() });
export const WorkspaceQuery = { workspace_id: Type.Optional(Id('ws')) };
export const Q = Type.Object(WorkspaceQuery, { additionalProperties: false });
export const PagedQ = Type.Object({ ...PageQuery, ...WorkspaceQuery }, { additionalProperties: false });
export const IdParam = Type.Object({ id: Type.String({ maxLength: 64 }) });
const ContactIds = Type.Object(
  { contact_ids: Type.Array(Id('ct'), { minItems: 1, maxItems: contacts.MAX_MEMBERS_PER_REQUEST }) },
  { additionalProperties: false },
);
const Membership = (count: 'added' | 'removed') => Type.Object({ [count]: Type.Integer(), list: ContactList });

const toContacts = <R extends contacts.ContactRow>(rows: R[], page: ReturnType<typeof pageRequest>) =>
  toPage(rows, page, (r) => r.id, contacts.contactRowToContact);

/** Contacts, lists, segments and CSV imports; every route acts on one workspace (`workspaceScope`). */
export function contactRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  const scopeOf = (request: Parameters<typeof actorOf>[0], workspaceId: string | undefined) =>
    workspaceScope(db, actorOf(request).principal, workspaceId);
  return async (app) => {
    const tags = ['contacts'];

    app.post(
      '/v1/contacts',
      {
        schema: {
          tags,
          summary: 'Create a contact (one per phone number in a workspace: a second one is a 409)',
          querystring: Q,
          body: Type.Object(
            {
              phone: Type.String({ minLength: 1, maxLength: 32, description: 'E.164' }),
              first_name: Type.Optional(Str(100)),
              last_name: Type.Optional(Str(100)),
              timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'IANA zone' })),
              locale: Type.Optional(Type.String({ minLength: 2, maxLength: 35, description: 'BCP 47, e.g. en-US' })),
              attributes: Type.Optional(Type.Record(Type.String(), AttrValue, { maxProperties: 100 })),
            },
            { additionalProperties: false },
          ),
          response: { 201: Contact },
        },
      },
      async (request, reply) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        const phone = parsePhone(request.body.phone);
        if (!phone.ok) throw validationError('phone', phone.reason);
        const contact = await contacts.createContact(db, scope, { ...request.body, phone: phone.e164, country: phone.country });
        return reply.code(201).send(contact);
      },
    );

    app.get(
      '/v1/contacts',
      {
        schema: {
          tags,
          summary: 'List contacts, newest first',
          querystring: Type.Object(
            {
              ...PageQuery,
              ...WorkspaceQuery,
              phone: Type.Optional(Type.String({ maxLength: 32 })),
              country: Type.Optional(Type.String({ pattern: '^[A-Z]{2}$' })),
              list_id: Type.Optional(Type.String({ maxLength: 64 })),
            },
            { additionalProperties: false },
          ),
          response: { 200: PageOf(Contact) },
        },
      },
      async (request) => {
        const q = request.query;
        const scope = await scopeOf(request, q.workspace_id);
        const page = pageRequest(q);
        const filter = {
          ...(q.phone !== undefined && { phone: phoneParam(q.phone) }),
          ...(q.country !== undefined && { country: q.country }),
          ...(q.list_id !== undefined && { listId: q.list_id }),
        };
        return toContacts(await contacts.listContacts(db, scope.workspaceId, filter, page), page);
      },
    );

    app.get(
      '/v1/contacts/:id',
      { schema: { tags, summary: 'One contact', params: IdParam, querystring: Q, response: { 200: Contact } } },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        return contacts.getContact(db, scope.workspaceId, request.params.id);
      },
    );

    app.patch(
      '/v1/contacts/:id',
      {
        schema: {
          tags,
          summary: 'Change a contact: fields left out are kept, null clears; attributes merge (null removes a key). The phone is fixed.',
          params: IdParam,
          querystring: Q,
          body: Type.Object(
            {
              first_name: Type.Optional(NullableStr(100)),
              last_name: Type.Optional(NullableStr(100)),
              timezone: Type.Optional(NullableStr(64)),
              locale: Type.Optional(NullableStr(35)),
              attributes: Type.Optional(Type.Record(Type.String(), AttrValueOrNull, { maxProperties: 100 })),
            },
            { additionalProperties: false },
          ),
          response: { 200: Contact },
        },
      },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        return contacts.updateContact(db, scope.workspaceId, request.params.id, request.body);
      },
    );

    app.delete(
      '/v1/contacts/:id',
      {
        schema: {
          tags,
          summary: 'Delete a contact and its list memberships (campaign recipients already snapshotted and the consent log stay)',
          params: IdParam,
          querystring: Q,
          response: { 204: Type.Null() },
        },
      },
      async (request, reply) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        await contacts.deleteContact(db, scope.workspaceId, request.params.id);
        return reply.code(204).send(null);
      },
    );

    app.post(
      '/v1/lists',
      {
        schema: {
          tags,
          summary: 'Create a static list',
          querystring: Q,
          body: Type.Object({ name: Str(200) }, { additionalProperties: false }),
          response: { 201: ContactList },
        },
      },
      async (request, reply) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        return reply.code(201).send(await contacts.createList(db, scope, request.body.name));
      },
    );

    app.get(
      '/v1/lists',
      { schema: { tags, summary: 'Lists with their member counts, newest first', querystring: PagedQ, response: { 200: PageOf(ContactList) } } },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        const page = pageRequest(request.query);
        return toPage(await contacts.listLists(db, scope.workspaceId, page), page, (r) => r.id, contacts.listRowToList);
      },
    );

    app.get(
      '/v1/lists/:id',
      { schema: { tags, summary: 'One list with its member count', params: IdParam, querystring: Q, response: { 200: ContactList } } },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        return contacts.getList(db, scope.workspaceId, request.params.id);
      },
    );

    app.post(
      '/v1/lists/:id/members',
      {
        schema: {
          tags,
          summary: "Add up to 10,000 contacts to a list: all or none (an id that is not the workspace's contact is a 422); members already there stay",
          params: IdParam,
          querystring: Q,
          body: ContactIds,
          response: { 200: Membership('added') },
        },
      },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        return contacts.addMembers(db, scope.workspaceId, request.params.id, request.body.contact_ids);
      },
    );

    app.delete(
      '/v1/lists/:id/members',
      {
        schema: {
          tags,
          summary: 'Remove contacts from a list (ids that are not members are ignored)',
          params: IdParam,
          querystring: Q,
          body: ContactIds,
          response: { 200: Membership('removed') },
        },
      },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        return contacts.removeMembers(db, scope.workspaceId, request.params.id, request.body.contact_ids);
      },
    );

    app.get(
      '/v1/lists/:id/members',
      { schema: { tags, summary: "A list's contacts, newest first", params: IdParam, querystring: PagedQ, response: { 200: PageOf(Contact) } } },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        const page = pageRequest(request.query);
        return toContacts(await contacts.listContacts(db, scope.workspaceId, { listId: request.params.id }, page), page);
      },
    );

    app.post(
      '/v1/segments',
      {
        schema: {
          tags,
          summary: 'Create a segment: a filter over the contacts, evaluated live',
          querystring: Q,
          body: Type.Object({ name: Str(200), filter: Filter }, { additionalProperties: false }),
          response: { 201: Segment },
        },
      },
      async (request, reply) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        return reply.code(201).send(await contacts.createSegment(db, scope, request.body));
      },
    );

    app.get(
      '/v1/segments',
      { schema: { tags, summary: 'Segments, newest first', querystring: PagedQ, response: { 200: PageOf(Segment) } } },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        const page = pageRequest(request.query);
        return toPage(await contacts.listSegments(db, scope.workspaceId, page), page, (r) => r.id, contacts.segmentRowToSegment);
      },
    );

    app.get(
      '/v1/segments/:id',
      {
        schema: {
          tags,
          summary: 'One segment with the number of contacts matching it now',
          params: IdParam,
          querystring: Q,
          response: { 200: Type.Intersect([Segment, Type.Object({ count: Type.Integer() })]) },
        },
      },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        const segment = await contacts.getSegment(db, scope.workspaceId, request.params.id);
        return { ...segment, count: await contacts.countSegment(db, scope.workspaceId, segment.id) };
      },
    );

    app.get(
      '/v1/segments/:id/contacts',
      { schema: { tags, summary: 'The contacts matching a segment now, newest first', params: IdParam, querystring: PagedQ, response: { 200: PageOf(Contact) } } },
      async (request) => {
        const scope = await scopeOf(request, request.query.workspace_id);
        const page = pageRequest(request.query);
        return toContacts(await contacts.segmentContacts(db, scope.workspaceId, request.params.id, page), page);
      },
    );

  };
}
