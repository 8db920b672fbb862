import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, buildTestApp, createTenant, operatorKey, type Tenant, type TestApp } from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

/** Contacts, lists and segments through the HTTP API, on a real database, with two tenants. */
let tdb: TestDatabase;
let app: TestApp;
let a: Tenant;
let b: Tenant;
let op: string;

interface Res {
  status: number;
  body: Record<string, unknown> & { data?: Record<string, unknown>[]; next_cursor?: string | null; errors?: { field: string }[] };
}

async function call(key: string, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown): Promise<Res> {
  const res = await app.inject({ method, url, headers: bearer(key), ...(payload !== undefined && { payload: payload as object }) });
  return { status: res.statusCode, body: res.body === '' ? {} : (res.json() as Res['body']) };
}

let n = 0;
const phone = () => `+1415555${String(2000 + n++).padStart(4, '0')}`;

async function contact(key: string, body: Record<string, unknown> = {}): Promise<Record<string, unknown> & { id: string }> {
  const res = await call(key, 'POST', '/v1/contacts', { phone: phone(), ...body });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as Record<string, unknown> & { id: string };
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  app = await buildTestApp(tdb);
  op = await operatorKey(tdb);
  a = await createTenant(app, op, 'Alpha');
  b = await createTenant(app, op, 'Beta');
});
afterAll(async () => {
  await app?.close();
  await tdb?.close();
});

describe('contacts', () => {
  it('create: E.164 normalised, country from the number, fields kept; the same phone again is a 409 naming the contact', async () => {
    const res = await call(a.workspaceKey, 'POST', '/v1/contacts', {
      phone: ' +44 7400 123456 ',
      first_name: 'Ann',
      timezone: 'Europe/London',
      locale: 'en-GB',
      attributes: { tier: 'gold', visits: 3, vip: true },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body).toMatchObject({ phone: '+447400123456', country: 'GB', first_name: 'Ann', last_name: null, attributes: { tier: 'gold', visits: 3, vip: true } });
    const again = await call(a.workspaceKey, 'POST', '/v1/contacts', { phone: '+447400123456' });
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ type: 'urn:credence:problem:conflict', contact_id: res.body.id });
    // another workspace may hold the same number
    expect((await call(b.workspaceKey, 'POST', '/v1/contacts', { phone: '+447400123456' })).status).toBe(201);
  });

  it('422s name the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ phone: '12345' }, 'phone'],
      [{ phone: phone(), timezone: 'Mars/Olympus' }, 'timezone'],
      [{ phone: phone(), locale: 'not a locale' }, 'locale'],
      [{ phone: phone(), attributes: { tier: { nested: 1 } } }, 'attributes.tier'],
      [{ phone: phone(), nickname: 'x' }, 'nickname'],
      [{ first_name: 'Ann' }, 'phone'],
    ];
    for (const [body, field] of cases) {
      const res = await call(a.workspaceKey, 'POST', '/v1/contacts', body);
      expect(res.status, JSON.stringify(body)).toBe(422);
      expect(res.body.errors?.map((e) => e.field)).toContain(field);
    }
  });

  it('get, patch (partial, attributes merged, null removes), delete; another tenant sees 404 everywhere', async () => {
    const c = await contact(a.workspaceKey, { first_name: 'Ann', last_name: 'Lee', attributes: { tier: 'gold', city: 'Austin' } });
    expect((await call(a.workspaceKey, 'GET', `/v1/contacts/${c.id}`)).body).toMatchObject({ id: c.id, first_name: 'Ann' });
    const patched = await call(a.workspaceKey, 'PATCH', `/v1/contacts/${c.id}`, {
      last_name: null,
      timezone: 'America/Chicago',
      attributes: { tier: 'silver', city: null, vip: false },
    });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({ first_name: 'Ann', last_name: null, timezone: 'America/Chicago', attributes: { tier: 'silver', vip: false } });
    expect(patched.body.attributes).not.toHaveProperty('city');
    expect(Date.parse(patched.body.updated_at as string)).toBeGreaterThan(Date.parse(c.updated_at as string) - 1);
    expect((await call(a.workspaceKey, 'PATCH', `/v1/contacts/${c.id}`, { phone: '+14155550000' })).status).toBe(422);

    for (const [method, url, payload] of [
      ['GET', `/v1/contacts/${c.id}`],
      ['PATCH', `/v1/contacts/${c.id}`, { first_name: 'Eve' }],
      ['DELETE', `/v1/contacts/${c.id}`],
    ] as const) {
      const res = await call(b.workspaceKey, method, url, payload);
      expect(res.status, `${method} ${url}`).toBe(404);
    }
    // an org key acts on the workspace it names; another org's workspace is a 404
    expect((await call(a.orgKey, 'GET', `/v1/contacts/${c.id}?workspace_id=${a.workspaceId}`)).status).toBe(200);
    expect((await call(a.orgKey, 'GET', `/v1/contacts/${c.id}`)).status).toBe(422);
    expect((await call(b.orgKey, 'GET', `/v1/contacts/${c.id}?workspace_id=${a.workspaceId}`)).status).toBe(404);
    expect((await call(b.orgKey, 'GET', `/v1/contacts/${c.id}?workspace_id=${b.workspaceId}`)).status).toBe(404);

    expect((await call(a.workspaceKey, 'DELETE', `/v1/contacts/${c.id}`)).status).toBe(204);
    expect((await call(a.workspaceKey, 'GET', `/v1/contacts/${c.id}`)).status).toBe(404);
    expect((await call(a.workspaceKey, 'DELETE', `/v1/contacts/${c.id}`)).status).toBe(404);
  });

  it('list: newest first, cursor pages without overlap, filters by phone, country and list', async () => {
    const { workspaceKey: key } = await createTenant(app, op, 'Listing');
    const made = [];
    for (let i = 0; i < 5; i++) made.push(await contact(key));
    const fr = await call(key, 'POST', '/v1/contacts', { phone: '+33612345678' });
    const seen: string[] = [];
    let cursor: string | null | undefined;
    do {
      const page = await call(key, 'GET', `/v1/contacts?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.body.data!.map((c) => c.id as string));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(seen).toEqual([fr.body.id, ...made.map((c) => c.id).reverse()]);
    expect((await call(key, 'GET', '/v1/contacts?country=FR')).body.data!.map((c) => c.id)).toEqual([fr.body.id]);
    const byPhone = await call(key, 'GET', `/v1/contacts?phone=${encodeURIComponent(made[2]!.phone as string)}`);
    expect(byPhone.body.data!.map((c) => c.id)).toEqual([made[2]!.id]);
    expect((await call(key, 'GET', '/v1/contacts?cursor=nonsense')).status).toBe(422);
  });
});

describe('lists', () => {
  it('create, add members (idempotent), counts, page members, remove; a deleted contact leaves its lists', async () => {
    const list = await call(a.workspaceKey, 'POST', '/v1/lists', { name: 'VIPs' });
    expect(list.status).toBe(201);
    expect(list.body).toMatchObject({ name: 'VIPs', member_count: 0 });
    const id = list.body.id as string;
    const cs = [await contact(a.workspaceKey), await contact(a.workspaceKey), await contact(a.workspaceKey)];
    const add = await call(a.workspaceKey, 'POST', `/v1/lists/${id}/members`, { contact_ids: cs.map((c) => c.id) });
    expect(add.status, JSON.stringify(add.body)).toBe(200);
    expect(add.body).toMatchObject({ added: 3, list: { member_count: 3 } });
    const again = await call(a.workspaceKey, 'POST', `/v1/lists/${id}/members`, { contact_ids: [cs[0]!.id, cs[0]!.id] });
    expect(again.body).toMatchObject({ added: 0, list: { member_count: 3 } });

    const members = await call(a.workspaceKey, 'GET', `/v1/lists/${id}/members?limit=2`);
    expect(members.body.data!.map((c) => c.id)).toEqual([cs[2]!.id, cs[1]!.id]);
    expect(members.body.next_cursor).not.toBeNull();
    expect((await call(a.workspaceKey, 'GET', `/v1/contacts?list_id=${id}`)).body.data).toHaveLength(3);
    const lists = await call(a.workspaceKey, 'GET', '/v1/lists');
    expect(lists.body.data!.find((l) => l.id === id)).toMatchObject({ member_count: 3 });

    expect((await call(a.workspaceKey, 'DELETE', `/v1/contacts/${cs[1]!.id}`)).status).toBe(204);
    expect((await call(a.workspaceKey, 'GET', `/v1/lists/${id}`)).body).toMatchObject({ member_count: 2 });
    const removed = await call(a.workspaceKey, 'DELETE', `/v1/lists/${id}/members`, { contact_ids: [cs[0]!.id, cs[1]!.id] });
    expect(removed.body).toMatchObject({ removed: 1, list: { member_count: 1 } });
  });

  it("an unknown or another workspace's contact is a 422 naming contact_ids.N, and nothing is added; another tenant's list is a 404", async () => {
    const id = (await call(a.workspaceKey, 'POST', '/v1/lists', { name: 'Strict' })).body.id as string;
    const mine = await contact(a.workspaceKey);
    const theirs = await contact(b.workspaceKey);
    const res = await call(a.workspaceKey, 'POST', `/v1/lists/${id}/members`, { contact_ids: [mine.id, theirs.id] });
    expect(res.status).toBe(422);
    expect(res.body.errors).toEqual([{ field: 'contact_ids.1', reason: 'is not a contact of this workspace' }]);
    const malformed = await call(a.workspaceKey, 'POST', `/v1/lists/${id}/members`, { contact_ids: [mine.id, 'nope'] });
    expect(malformed.status).toBe(422);
    expect(malformed.body.errors![0]!.field).toBe('contact_ids.1');
    expect((await call(a.workspaceKey, 'GET', `/v1/lists/${id}`)).body).toMatchObject({ member_count: 0 });

    expect((await call(b.workspaceKey, 'GET', `/v1/lists/${id}`)).status).toBe(404);
    expect((await call(b.workspaceKey, 'GET', `/v1/lists/${id}/members`)).status).toBe(404);
    expect((await call(b.workspaceKey, 'POST', `/v1/lists/${id}/members`, { contact_ids: [theirs.id] })).status).toBe(404);
    expect((await call(b.workspaceKey, 'GET', `/v1/contacts?list_id=${id}`)).status).toBe(404);
  });

  it('takes 10,000 contact ids in one request', async () => {
    const id = (await call(a.workspaceKey, 'POST', '/v1/lists', { name: 'Big' })).body.id as string;
    const { sql } = await import('kysely');
    const { newId } = await import('../src/shared/ids.ts');
    const ids = Array.from({ length: 10_000 }, () => newId('ct'));
    await sql`insert into contacts (id, organization_id, workspace_id, phone, country)
      select id, ${a.organizationId}, ${a.workspaceId}, '+1212' || lpad(i::text, 7, '0'), 'US'
      from unnest(${ids}::text[]) with ordinality as x(id, i)`.execute(tdb.db);
    const res = await call(a.workspaceKey, 'POST', `/v1/lists/${id}/members`, { contact_ids: ids });
    expect(res.status, JSON.stringify(res.body).slice(0, 300)).toBe(200);
    expect(res.body).toMatchObject({ added: 10_000, list: { member_count: 10_000 } });
    expect((await call(a.workspaceKey, 'POST', `/v1/lists/${id}/members`, { contact_ids: [...ids, ids[0]] })).status).toBe(422);
  });
});

it('the OpenAPI document describes the new routes', async () => {
  const res = await app.inject({ method: 'GET', url: '/openapi.json' });
  expect(res.statusCode).toBe(200);
  const paths = Object.keys((res.json() as { paths: Record<string, unknown> }).paths);
  for (const path of ['/v1/contacts', '/v1/contacts/{id}', '/v1/lists/{id}/members', '/v1/segments/{id}/contacts', '/v1/contacts/imports/{id}/errors']) {
    expect(paths).toContain(path);
  }
});

describe('segments', () => {
  it('countries, timezones and attributes (any of several values; all conditions together), live count and preview', async () => {
    const { workspaceKey: key } = await createTenant(app, op, 'Segmenting');
    const mk = async (p: string, body: Record<string, unknown>) => {
      const res = await call(key, 'POST', '/v1/contacts', { phone: p, ...body });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      return res.body.id as string;
    };
    const ny = await mk('+12125550101', { timezone: 'America/New_York', attributes: { tier: 'gold', visits: 3 } });
    const la = await mk('+13105550102', { timezone: 'America/Los_Angeles', attributes: { tier: 'silver', visits: 3 } });
    const ny2 = await mk('+12125550103', { timezone: 'America/New_York', attributes: { tier: 'bronze' } });
    const uk = await mk('+447400123457', { timezone: 'Europe/London', attributes: { tier: 'gold', vip: true } });

    const seg = async (filter: Record<string, unknown>) => {
      const res = await call(key, 'POST', '/v1/segments', { name: 'S', filter });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      const id = res.body.id as string;
      const one = await call(key, 'GET', `/v1/segments/${id}`);
      const preview = await call(key, 'GET', `/v1/segments/${id}/contacts`);
      const ids = preview.body.data!.map((c) => c.id as string);
      expect(one.body.count).toBe(ids.length);
      return new Set(ids);
    };
    expect(await seg({ countries: ['US'] })).toEqual(new Set([ny, la, ny2]));
    expect(await seg({ timezones: ['America/New_York', 'Europe/London'] })).toEqual(new Set([ny, ny2, uk]));
    expect(await seg({ attributes: { tier: ['gold', 'silver'] } })).toEqual(new Set([ny, la, uk]));
    expect(await seg({ countries: ['US'], attributes: { tier: ['gold', 'silver'], visits: [3] } })).toEqual(new Set([ny, la]));
    expect(await seg({ attributes: { vip: [true] } })).toEqual(new Set([uk]));
    expect(await seg({ attributes: { visits: ['3'] } })).toEqual(new Set()); // types matter: 3 is not "3"
    expect(await seg({})).toEqual(new Set([ny, la, ny2, uk]));

    const bad: [Record<string, unknown>, string][] = [
      [{ countries: ['usa'] }, 'filter.countries.0'],
      [{ timezones: ['Mars/Base'] }, 'filter.timezones.0'],
      [{ attributes: { tier: [] } }, 'filter.attributes.tier'],
      [{ planets: ['x'] }, 'filter.planets'],
    ];
    for (const [filter, field] of bad) {
      const res = await call(key, 'POST', '/v1/segments', { name: 'Bad', filter });
      expect(res.status, JSON.stringify(filter)).toBe(422);
      expect(res.body.errors!.map((e) => e.field)).toContain(field);
    }
  });

  it("another tenant's segment is a 404", async () => {
    const res = await call(a.workspaceKey, 'POST', '/v1/segments', { name: 'Mine', filter: { countries: ['US'] } });
    const id = res.body.id as string;
    expect((await call(a.workspaceKey, 'GET', '/v1/segments')).body.data!.map((s) => s.id)).toContain(id);
    expect((await call(b.workspaceKey, 'GET', `/v1/segments/${id}`)).status).toBe(404);
    expect((await call(b.workspaceKey, 'GET', `/v1/segments/${id}/contacts`)).status).toBe(404);
    expect((await call(b.workspaceKey, 'GET', '/v1/segments')).body.data!.map((s) => s.id)).not.toContain(id);
  });
});

describe('erasing a number whose contact came back', () => {
  it('folds the new contact into the one erased before: 200, names gone, its lists kept, one contact for the hash', async () => {
    const number = phone();
    const list = await call(a.workspaceKey, 'POST', '/v1/lists', { name: 'erasure twice' });
    const listId = list.body.id as string;
    const add = async (first_name: string) => {
      const c = await contact(a.workspaceKey, { phone: number, first_name, attributes: { tier: 'gold' } });
      expect((await call(a.workspaceKey, 'POST', `/v1/lists/${listId}/members`, { contact_ids: [c.id] })).status).toBeLessThan(300);
      return c;
    };
    const erase = () => call(a.workspaceKey, 'POST', '/v1/privacy/erasures', { phone: number });
    const first = await add('Jane');
    expect((await erase()).status).toBe(200);
    await add('Jane again'); // added again later (by the API or an import)
    const second = await erase();
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(second.body).toMatchObject({ contacts_pseudonymized: 1 });
    const left = await tdb.pool.query<{ id: string; phone: string; first_name: string | null; attributes: unknown }>(
      "select id, phone, first_name, attributes from contacts where workspace_id = $1 and (phone = $2 or phone = $3)",
      [a.workspaceId, number, second.body.phone_hash],
    );
    expect(left.rows).toEqual([{ id: first.id, phone: second.body.phone_hash, first_name: null, attributes: {} }]);
    const members = await tdb.pool.query<{ contact_id: string }>('select contact_id from contact_list_members where list_id = $1', [listId]);
    expect(members.rows).toEqual([{ contact_id: first.id }]);
    // and a third time, with nothing to fold, changes nothing
    expect((await erase()).status).toBe(200);
  });
});
