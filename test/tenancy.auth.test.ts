import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearer,
  buildTestApp,
  createTenant,
  operatorKey,
  type Tenant,
  type TestApp,
} from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

let tdb: TestDatabase;
let app: TestApp;
let op: string;
let acme: Tenant;
let globex: Tenant;

beforeAll(async () => {
  tdb = await createTestDatabase();
  app = await buildTestApp(tdb);
  op = await operatorKey(tdb);
  acme = await createTenant(app, op, 'Acme');
  globex = await createTenant(app, op, 'Globex');
});
afterAll(async () => {
  await app.close();
  await tdb.close();
});

const problem = (res: { headers: Record<string, unknown>; json: () => unknown }) => {
  expect(res.headers['content-type']).toContain('application/problem+json');
  return res.json() as {
    type: string;
    title: string;
    status: number;
    errors?: { field: string }[];
  };
};

describe('authentication', () => {
  it('401 without a key, with a malformed key, with an unknown key', async () => {
    for (const headers of [
      {},
      { authorization: 'Bearer nope' },
      { authorization: 'Basic abc' },
      bearer(`crd_ws_${'A'.repeat(43)}`),
      // right prefix, wrong secret: same lookup row, hash mismatch
      bearer(
        acme.workspaceKey.slice(0, -4) + (acme.workspaceKey.endsWith('AAAA') ? 'BBBB' : 'AAAA'),
      ),
    ]) {
      const res = await app.inject({ method: 'GET', url: '/v1/me', headers });
      expect(res.statusCode).toBe(401);
      expect(problem(res).type).toBe('urn:credence:problem:unauthenticated');
    }
  });

  it('identifies each scope on /v1/me', async () => {
    const me = (key: string) => app.inject({ method: 'GET', url: '/v1/me', headers: bearer(key) });
    expect((await me(op)).json()).toMatchObject({
      scope: 'operator',
      organization: null,
      workspace: null,
    });
    expect((await me(acme.orgKey)).json()).toMatchObject({
      scope: 'organization',
      organization: { id: acme.organizationId, name: 'Acme' },
      workspace: null,
    });
    expect((await me(acme.workspaceKey)).json()).toMatchObject({
      scope: 'workspace',
      workspace: { id: acme.workspaceId, organization_id: acme.organizationId },
    });
  });

  it('a revoked key stops working at once, and stays revoked', async () => {
    const created = await app.inject({
      method: 'POST',
      url: '/v1/api-keys',
      headers: bearer(acme.orgKey),
      payload: { name: 'temp', scope: 'workspace', workspace_id: acme.workspaceId },
    });
    expect(created.statusCode).toBe(201);
    const { key, api_key } = created.json() as {
      key: string;
      api_key: { id: string; prefix: string };
    };
    expect(key.startsWith(api_key.prefix)).toBe(true);
    expect(
      (await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(key) })).statusCode,
    ).toBe(200);
    const revoked = await app.inject({
      method: 'POST',
      url: `/v1/api-keys/${api_key.id}/revoke`,
      headers: bearer(acme.orgKey),
    });
    expect(revoked.statusCode).toBe(200);
    expect(revoked.json().revoked_at).not.toBeNull();
    const after = await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(key) });
    expect(after.statusCode).toBe(401);
  });

  it('stores only a SHA-256 hash of each key', async () => {
    const rows = await tdb.db.selectFrom('api_keys').selectAll().execute();
    for (const row of rows) {
      expect(row.key_hash.length).toBe(32);
      expect(JSON.stringify(row)).not.toContain(acme.workspaceKey);
    }
  });

  it('health, readiness and docs need no key', async () => {
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({
      status: 'ready',
    });
    const spec = await app.inject({ method: 'GET', url: '/openapi.json' });
    expect(spec.statusCode).toBe(200);
    expect(spec.json().paths['/v1/workspaces']).toBeDefined();
    expect((await app.inject({ method: 'GET', url: '/docs' })).statusCode).toBeLessThan(400);
  });

  it('every response carries a request id, and honours a sane incoming one', async () => {
    const res = await app.inject({
      method: 'GET',
      url: '/healthz',
      headers: { 'x-request-id': 'abc-123' },
    });
    expect(res.headers['x-request-id']).toBe('abc-123');
    const res2 = await app.inject({ method: 'GET', url: '/v1/me' });
    expect(String(res2.headers['x-request-id'])).toMatch(/^req_/);
    expect(res2.json().request_id).toBe(res2.headers['x-request-id']);
  });
});

describe('tenant isolation (G8)', () => {
  it("another tenant's workspace, organization and key are 404, never 403", async () => {
    const cases = [
      { method: 'GET' as const, url: `/v1/workspaces/${globex.workspaceId}`, key: acme.orgKey },
      {
        method: 'GET' as const,
        url: `/v1/workspaces/${globex.workspaceId}`,
        key: acme.workspaceKey,
      },
      {
        method: 'GET' as const,
        url: `/v1/organizations/${globex.organizationId}`,
        key: acme.orgKey,
      },
      {
        method: 'GET' as const,
        url: `/v1/organizations/${globex.organizationId}`,
        key: acme.workspaceKey,
      },
      { method: 'GET' as const, url: '/v1/workspaces/ws_NOPE', key: acme.orgKey },
    ];
    for (const c of cases) {
      const res = await app.inject({ method: c.method, url: c.url, headers: bearer(c.key) });
      expect(res.statusCode, c.url).toBe(404);
      expect(problem(res).type).toBe('urn:credence:problem:not-found');
    }
  });

  it('cannot list, create keys in, or revoke keys of another organization', async () => {
    const list = await app.inject({
      method: 'GET',
      url: `/v1/workspaces?organization_id=${globex.organizationId}`,
      headers: bearer(acme.orgKey),
    });
    expect(list.statusCode).toBe(404);

    const key = await app.inject({
      method: 'POST',
      url: '/v1/api-keys',
      headers: bearer(acme.orgKey),
      payload: { name: 'sneaky', scope: 'workspace', workspace_id: globex.workspaceId },
    });
    expect(key.statusCode).toBe(404);

    const globexKeys = await app.inject({
      method: 'GET',
      url: '/v1/api-keys',
      headers: bearer(globex.orgKey),
    });
    const someGlobexKey = (globexKeys.json() as { data: { id: string }[] }).data[0]!.id;
    const revoke = await app.inject({
      method: 'POST',
      url: `/v1/api-keys/${someGlobexKey}/revoke`,
      headers: bearer(acme.orgKey),
    });
    expect(revoke.statusCode).toBe(404);
    // and globex's key still works
    expect(
      (await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(globex.orgKey) }))
        .statusCode,
    ).toBe(200);
  });

  it('lists only the caller organization', async () => {
    const res = await app.inject({
      method: 'GET',
      url: '/v1/workspaces',
      headers: bearer(acme.orgKey),
    });
    const ids = (res.json() as { data: { organization_id: string }[] }).data.map(
      (w) => w.organization_id,
    );
    expect(ids.length).toBeGreaterThan(0);
    expect(new Set(ids)).toEqual(new Set([acme.organizationId]));
  });

  it('scopes limit what a key may do', async () => {
    const wsCreatesOrg = await app.inject({
      method: 'POST',
      url: '/v1/organizations',
      headers: bearer(acme.workspaceKey),
      payload: { name: 'x' },
    });
    expect(wsCreatesOrg.statusCode).toBe(403);
    const orgCreatesOrg = await app.inject({
      method: 'POST',
      url: '/v1/organizations',
      headers: bearer(acme.orgKey),
      payload: { name: 'x' },
    });
    expect(orgCreatesOrg.statusCode).toBe(403);
    const wsCreatesWs = await app.inject({
      method: 'POST',
      url: '/v1/workspaces',
      headers: bearer(acme.workspaceKey),
      payload: { name: 'x' },
    });
    expect(wsCreatesWs.statusCode).toBe(403);
    const orgMakesOperator = await app.inject({
      method: 'POST',
      url: '/v1/api-keys',
      headers: bearer(acme.orgKey),
      payload: { name: 'x', scope: 'operator' },
    });
    expect(orgMakesOperator.statusCode).toBe(403);
  });
});

describe('input errors are problem+json naming the field, and change nothing', () => {
  it('unknown fields, wrong types, missing fields', async () => {
    const before = await tdb.db.selectFrom('workspaces').select('id').execute();
    const res = await app.inject({
      method: 'POST',
      url: '/v1/workspaces',
      headers: bearer(acme.orgKey),
      payload: { name: '', home_country: 'usa', colour: 'red' },
    });
    expect(res.statusCode).toBe(422);
    const body = problem(res);
    const fields = (body.errors ?? []).map((e) => e.field).sort();
    expect(fields).toEqual(['colour', 'home_country', 'name']);
    const badZone = await app.inject({
      method: 'POST',
      url: '/v1/workspaces',
      headers: bearer(acme.orgKey),
      payload: { name: 'ok', timezone: 'Mars/Olympus' },
    });
    expect(badZone.statusCode).toBe(422);
    expect(problem(badZone).errors?.[0]?.field).toBe('timezone');
    const after = await tdb.db.selectFrom('workspaces').select('id').execute();
    expect(after.length).toBe(before.length);
  });

  it('malformed JSON is a 400 problem', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/workspaces',
      headers: { ...bearer(acme.orgKey), 'content-type': 'application/json' },
      payload: '{"name": ',
    });
    expect(res.statusCode).toBe(400);
    expect(problem(res).type).toBe('urn:credence:problem:malformed-request');
  });

  it('unknown routes are 404 problems', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nothing-here', headers: bearer(op) });
    expect(res.statusCode).toBe(404);
    problem(res);
  });
});

describe('pagination', () => {
  it('walks every workspace exactly once with cursors, newest first', async () => {
    for (let i = 0; i < 7; i++) {
      const r = await app.inject({
        method: 'POST',
        url: '/v1/workspaces',
        headers: bearer(globex.orgKey),
        payload: { name: `page-${i}` },
      });
      expect(r.statusCode).toBe(201);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const url: string = `/v1/workspaces?limit=3${cursor ? `&cursor=${cursor}` : ''}`;
      const res = await app.inject({ method: 'GET', url, headers: bearer(globex.orgKey) });
      const page = res.json() as { data: { id: string }[]; next_cursor: string | null };
      expect(page.data.length).toBeLessThanOrEqual(3);
      seen.push(...page.data.map((w) => w.id));
      cursor = page.next_cursor;
    } while (cursor !== null);
    expect(seen.length).toBe(8);
    expect(new Set(seen).size).toBe(8);
    expect([...seen].sort().reverse()).toEqual(seen);

    const bad = await app.inject({
      method: 'GET',
      url: '/v1/workspaces?cursor=garbage',
      headers: bearer(globex.orgKey),
    });
    expect(bad.statusCode).toBe(422);
  });
});

describe('audit', () => {
  it('admin actions leave audit records that cannot be edited', async () => {
    const rows = await tdb.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'organization.create')
      .execute();
    expect(rows.length).toBeGreaterThanOrEqual(2);
    await expect(tdb.db.updateTable('audit_log').set({ reason: 'x' }).execute()).rejects.toThrow(
      /append-only/,
    );
    await expect(tdb.db.deleteFrom('audit_log').execute()).rejects.toThrow(/append-only/);
  });
});
