import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, buildTestApp, createTenant, operatorKey, type Tenant, type TestApp } from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

/** The HTTP boundary: bad input is a problem+json naming the field, and changes nothing (each test was a defect found in review). */
let tdb: TestDatabase;
let app: TestApp;
let a: Tenant;
let b: Tenant;
let op: string;
let listA: string;

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
async function call(key: string, method: Method, url: string, payload?: unknown, headers: Record<string, string> = {}) {
  const raw = typeof payload === 'string';
  const res = await app.inject({
    method,
    url,
    headers: { ...bearer(key), ...(payload !== undefined && { 'content-type': 'application/json' }), ...headers },
    ...(payload !== undefined && { payload: raw ? payload : JSON.stringify(payload) }),
  });
  const body = res.body === '' ? {} : (JSON.parse(res.body) as Record<string, unknown>);
  return { status: res.statusCode, type: String(res.headers['content-type']), body };
}
const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const expectProblem = (r: { status: number; type: string; body: Record<string, unknown> }, status: number, field?: string) => {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.type).toMatch(/^application\/problem\+json/);
  expect(r.body.status).toBe(status);
  if (field !== undefined) expect((r.body.errors as { field: string }[] | undefined)?.map((e) => e.field)).toContain(field);
};

beforeAll(async () => {
  tdb = await createTestDatabase();
  app = await buildTestApp(tdb);
  op = await operatorKey(tdb);
  a = await createTenant(app, op, 'Alpha');
  b = await createTenant(app, op, 'Beta');
  await call(a.workspaceKey, 'POST', '/v1/sender-numbers', { phone_number: '+14155550100' });
  await call(b.workspaceKey, 'POST', '/v1/sender-numbers', { phone_number: '+14155550101' });
  listA = (await call(a.workspaceKey, 'POST', '/v1/lists', { name: 'la' })).body.id as string;
});
afterAll(async () => {
  await app?.close();
  await tdb?.close();
});

describe('lone UTF-16 surrogates are a 422 (jsonb refused them with a 500, text stored U+FFFD)', () => {
  const J = { 'content-type': 'application/json' };
  it('POST /v1/messages body "a\\ud800b" is a 422 naming body, not a 500', async () => {
    const r = await call(a.workspaceKey, 'POST', '/v1/messages', '{"to":"+14155552671","body":"a\\ud800b","purpose":"transactional"}', J);
    expectProblem(r, 422, 'body');
  });
  it('POST /v1/consents evidence with a lone surrogate is a 422 naming evidence.x', async () => {
    const r = await call(a.workspaceKey, 'POST', '/v1/consents', '{"phone":"+14155552671","purposes":["marketing"],"action":"granted","evidence":{"x":"\\ud800"}}', J);
    expectProblem(r, 422, 'evidence.x');
  });
  it('POST /v1/contacts attributes value with a lone surrogate is a 422', async () => {
    const r = await call(a.workspaceKey, 'POST', '/v1/contacts', '{"phone":"+14155552003","attributes":{"x":"a\\ud800"}}', J);
    expectProblem(r, 422, 'attributes.x');
  });
  it('POST /v1/segments filter value with a lone surrogate is a 422', async () => {
    const r = await call(a.workspaceKey, 'POST', '/v1/segments', '{"name":"s","filter":{"attributes":{"x":["\\ud800"]}}}', J);
    expectProblem(r, 422, 'filter.attributes.x.0');
  });
  it('POST /v1/organizations / /v1/workspaces name with a lone surrogate is a 422 (audit details jsonb)', async () => {
    expectProblem(await call(op, 'POST', '/v1/organizations', '{"name":"a\\udc00"}', J), 422, 'name');
    expectProblem(await call(a.orgKey, 'POST', '/v1/workspaces', '{"name":"a\\udc00"}', J), 422, 'name');
  });
  it('PATCH sending-rules help_text with a lone surrogate is a 422', async () => {
    const r = await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}/sending-rules`, '{"help_text":"a\\ud800"}', J);
    expectProblem(r, 422, 'help_text');
  });
  it('POST /v1/contacts first_name with a lone surrogate is refused, not stored as U+FFFD', async () => {
    const r = await call(a.workspaceKey, 'POST', '/v1/contacts', '{"phone":"+14155552002","first_name":"a\\ud800"}', J);
    expectProblem(r, 422, 'first_name');
  });
});

describe('JSON bodies are validated as they are, never converted (0 and false became null, true the amount 1)', () => {
  it('hourly_cap: 0 is stored as 0 (it became null: no cap at all)', async () => {
    const r = await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}/sending-rules`, { hourly_cap: 0 });
    expect(r.status).toBe(200);
    expect((r.body.settings as { hourly_cap: unknown }).hourly_cap).toBe(0);
  });
  it('frequency_caps.marketing: 0 is a 422, not "no cap for marketing"', async () => {
    const r = await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}/sending-rules`, { frequency_caps: { marketing: 0 } });
    expectProblem(r, 422, 'frequency_caps.marketing');
  });
  it('help_text: "" is a 422 (minLength 1), not a silent clear', async () => {
    await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}/sending-rules`, { help_text: 'Call us' });
    const r = await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}/sending-rules`, { help_text: '' });
    expectProblem(r, 422, 'help_text');
  });
  it('campaign throttle_mps: 0 is a 422 (minimum 0.01), not an unthrottled campaign', async () => {
    const r = await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: 'hi', audience: { type: 'list', id: listA }, throttle_mps: 0 });
    expectProblem(r, 422, 'throttle_mps');
  });
  it('campaign error_threshold: 0 is a 422 (exclusiveMinimum 0), not "no threshold"', async () => {
    const r = await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: 'hi', audience: { type: 'list', id: listA }, error_threshold: 0 });
    expectProblem(r, 422, 'error_threshold');
  });
  it('PATCH /v1/workspaces/{id} sms_enabled: null is a 422, not "SMS off"', async () => {
    const r = await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}`, { sms_enabled: null });
    await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}`, { sms_enabled: true });
    expectProblem(r, 422, 'sms_enabled');
  });
  it('operator grant amount: true is a 422, not a 1-credit grant', async () => {
    const r = await call(op, 'POST', `/v1/organizations/${a.organizationId}/credits/grants`, { amount: true, reason: 'r', idempotency_key: 'bool' });
    expectProblem(r, 422, 'amount');
  });
  it('POST /v1/messages body: 12 / purpose: ["transactional"] are 422s', async () => {
    expectProblem(await call(a.workspaceKey, 'POST', '/v1/messages', { to: '+14155552671', body: 12, purpose: 'transactional' }), 422, 'body');
    expectProblem(await call(a.workspaceKey, 'POST', '/v1/messages', { to: '+14155552671', body: 'hi', purpose: ['transactional'] }), 422, 'purpose');
  });
});

it('a 409 on a campaign action keeps the problem\'s integer status (it was overwritten with "draft")', async () => {
  const c = await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: 'hi', audience: { type: 'list', id: listA } });
  const r = await call(a.workspaceKey, 'POST', `/v1/campaigns/${c.body.id as string}/pause`);
  expectProblem(r, 409);
});

it('POST /v1/contacts/imports with a JSON body is a 415/422 problem, not a 500 (and nothing stored)', async () => {
  const r = await call(a.workspaceKey, 'POST', '/v1/contacts/imports', { phone: '+14155552100' });
  expect(r.status).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from contact_imports where workspace_id = ${a.workspaceId}`.execute(tdb.db);
  expect(rows[0]!.n).toBe(0);
});

it('GET /v1/contacts/imports/{id}/errors with a cursor past 2^31 is a 422 naming cursor, not a 500', async () => {
  const imp = await app.inject({ method: 'POST', url: '/v1/contacts/imports', headers: { ...bearer(a.workspaceKey), 'content-type': 'text/csv' }, payload: 'phone\nnope\n' });
  expect(imp.statusCode).toBe(202);
  const id = (imp.json() as { id: string }).id;
  const r = await call(a.workspaceKey, 'GET', `/v1/contacts/imports/${id}/errors?cursor=${enc({ b: '99999999999' })}`);
  expect([200, 422]).toContain(r.status);
});

it('POST /v1/consents with deeply nested evidence is a 422 naming evidence, not a 500', async () => {
  const deep = '['.repeat(5000) + ']'.repeat(5000);
  const r = await call(a.workspaceKey, 'POST', '/v1/consents', `{"phone":"+14155552671","purposes":["marketing"],"action":"granted","evidence":{"x":${deep}}}`);
  expectProblem(r, 422);
});

describe("another tenant's workspace id in a filter is a 404 for an organization key (it was a 200 with an empty page)", () => {
  it('GET /v1/messages?workspace_id=<other org>', async () => {
    expectProblem(await call(a.orgKey, 'GET', `/v1/messages?workspace_id=${b.workspaceId}`), 404);
  });
  it('GET /v1/api-keys?workspace_id=<other org>', async () => {
    expectProblem(await call(a.orgKey, 'GET', `/v1/api-keys?workspace_id=${b.workspaceId}`), 404);
  });
});

it("POST /v1/api-keys naming another organization's id with a workspace scope is not a 201 for our workspace", async () => {
  const r = await call(a.orgKey, 'POST', '/v1/api-keys', { name: 'x', scope: 'workspace', workspace_id: a.workspaceId, organization_id: b.organizationId });
  expect(r.status).not.toBe(201);
});

it('country codes: ZZ is not an ISO 3166-1 code (workspace home_country, allowed_countries)', async () => {
  expectProblem(await call(a.orgKey, 'POST', '/v1/workspaces', { name: 'x', home_country: 'ZZ' }), 422, 'home_country');
  expectProblem(await call(a.orgKey, 'PATCH', `/v1/workspaces/${a.workspaceId}/sending-rules`, { allowed_countries: ['ZZ'] }), 422, 'allowed_countries.0');
});

it('a text/plain upload is a 415 (the route streams text/csv; other bodies were buffered whole and accepted)', async () => {
  const r = await app.inject({ method: 'POST', url: '/v1/contacts/imports', headers: { ...bearer(b.workspaceKey), 'content-type': 'text/plain' }, payload: 'phone\n+14155552100\n' });
  expect(r.statusCode).toBe(415);
});

describe('empty strings and unknown fields are 422s, not ignored', () => {
  it('POST /v1/campaigns/{id}/preview {"contact_id":""} is a 422, not a preview of the first contact', async () => {
    await call(a.workspaceKey, 'POST', '/v1/contacts', { phone: '+14155552400' }).then(async (c) =>
      call(a.workspaceKey, 'POST', `/v1/lists/${listA}/members`, { contact_ids: [c.body.id] }),
    );
    const c = await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: 'hi', audience: { type: 'list', id: listA } });
    expectProblem(await call(a.workspaceKey, 'POST', `/v1/campaigns/${c.body.id as string}/preview`, { contact_id: '' }), 422, 'contact_id');
  });
  it('POST /v1/campaigns/{id}/start with a body field or query parameter it does not know is a 422', async () => {
    const c = await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: 'hi', audience: { type: 'list', id: listA } });
    expectProblem(await call(a.workspaceKey, 'POST', `/v1/campaigns/${c.body.id as string}/start?workspace_id=${b.workspaceId}`, { scheduled_at: '2031-01-01T00:00:00Z' }), 422);
  });
});

it('GET /v1/messages with from after until is a 422 naming from, as the ledger listing is', async () => {
  expectProblem(await call(a.orgKey, 'GET', '/v1/messages?from=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z'), 422, 'from');
});

it('POST /v1/campaigns/{id}/preview without a body previews the first contact of the audience', async () => {
  const c = await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: 'hi {{first_name|there}}', audience: { type: 'list', id: listA } });
  const r = await app.inject({ method: 'POST', url: `/v1/campaigns/${c.body.id as string}/preview`, headers: bearer(a.workspaceKey) });
  expect(r.statusCode, r.body).toBe(200);
  expect((r.json() as { body: string }).body).toBe('hi there');
});

it('a campaign body of only spaces is a 422 naming body (every recipient would be skipped as empty_body)', async () => {
  expectProblem(await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: '   ', audience: { type: 'list', id: listA } }), 422, 'body');
  expect((await call(a.workspaceKey, 'POST', '/v1/campaigns', { name: 'c', body: ' {{first_name}} ', audience: { type: 'list', id: listA } })).status).toBe(201);
});

it('the OpenAPI document gives every operation its problem+json errors, and the CSV and event-stream media', async () => {
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
    components: { schemas: Record<string, unknown> };
    paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: { $ref?: string } }> }>; requestBody?: { content: Record<string, unknown> } }>>;
  };
  expect(Object.keys(doc.components.schemas)).toContain('Problem');
  let operations = 0;
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      operations++;
      for (const range of ['4XX', '5XX']) {
        expect(op.responses[range]?.content?.['application/problem+json']?.schema.$ref, `${method} ${path} ${range}`).toBe('#/components/schemas/Problem');
      }
    }
  }
  expect(operations).toBeGreaterThan(50);
  expect(Object.keys(doc.paths['/v1/contacts/imports']!.post!.requestBody!.content)).toEqual(['text/csv']);
  expect(Object.keys(doc.paths['/v1/campaigns/{id}/progress/stream']!.get!.responses['200']!.content!)).toEqual(['text/event-stream']);
  expect(Object.keys(doc.paths['/v1/credits/ledger']!.get!.responses['200']!.content!)).toContain('text/csv');
});
