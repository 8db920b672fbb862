import { spawnSync } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as credits from '../src/credits/index.ts';
import { bearer, buildTestApp, createTenant, operatorKey, type Tenant, type TestApp } from './helpers/app.ts';
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

const adjust = (org: string, key: string, body: Record<string, unknown>) =>
  app.inject({ method: 'POST', url: `/v1/organizations/${org}/credits/adjustments`, headers: bearer(key), payload: body });

describe('credits API', () => {
  it('operator grants and adjustments, idempotent by key, audited, visible in balances', async () => {
    const g = await app.inject({
      method: 'POST',
      url: `/v1/organizations/${acme.organizationId}/credits/grants`,
      headers: bearer(op),
      payload: { amount: 100, reason: 'welcome', idempotency_key: 'welcome-1' },
    });
    expect(g.statusCode).toBe(201);
    const a1 = await adjust(acme.organizationId, op, { amount: -30, reason: 'rollback', idempotency_key: 'rb-1' });
    expect(a1.statusCode).toBe(201);
    const a2 = await adjust(acme.organizationId, op, { amount: -30, reason: 'rollback', idempotency_key: 'rb-1' });
    expect(a2.statusCode).toBe(200);
    expect(a2.json().replayed).toBe(true);
    const conflict = await adjust(acme.organizationId, op, { amount: -31, reason: 'rollback', idempotency_key: 'rb-1' });
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json().type).toBe('urn:credence:problem:idempotency-conflict');

    const view = await app.inject({ method: 'GET', url: '/v1/credits', headers: bearer(acme.workspaceKey) });
    expect(view.json()).toMatchObject({ organization_id: acme.organizationId, available: 70, debt: 0, purchased: { available: 70 } });
    const audit = await tdb.db.selectFrom('audit_log').selectAll().where('organization_id', '=', acme.organizationId).where('action', 'like', 'credits.%').execute();
    expect(audit.map((x) => [x.action, x.reason])).toEqual([
      ['credits.grant', 'welcome'],
      ['credits.adjust', 'rollback'],
    ]);
  });

  it('only operators adjust; bad input is a 422 naming the field and changes nothing', async () => {
    expect((await adjust(acme.organizationId, acme.orgKey, { amount: 5, reason: 'x', idempotency_key: 'k' })).statusCode).toBe(403);
    const before = await credits.getCredits(tdb.db, acme.organizationId);
    for (const [body, field] of [
      [{ amount: 0, reason: 'x', idempotency_key: 'z1' }, 'amount'],
      [{ amount: 1.5, reason: 'x', idempotency_key: 'z2' }, 'amount'],
      [{ amount: 5, idempotency_key: 'z3' }, 'reason'],
      [{ amount: 5, reason: 'x' }, 'idempotency_key'],
      // '#' and ':' name the ledger's derived and system keys: "k1#2" collided with operation "k1"'s second entry (a 500)
      [{ amount: 5, reason: 'x', idempotency_key: 'rb-1#2' }, 'idempotency_key'],
      [{ amount: 5, reason: 'x', idempotency_key: 'checkout:cs_1' }, 'idempotency_key'],
      [{ amount: 1_000_000_000_001, reason: 'x', idempotency_key: 'z4' }, 'amount'],
      [{ amount: -1_000_000_000_001, reason: 'x', idempotency_key: 'z5' }, 'amount'],
    ] as const) {
      const res = await adjust(acme.organizationId, op, body);
      expect(res.statusCode, JSON.stringify(body)).toBe(422);
      expect(res.json().errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    expect(await credits.getCredits(tdb.db, acme.organizationId)).toEqual(before);
    const missing = await adjust('org_00000000000000000000000000', op, { amount: 5, reason: 'x', idempotency_key: 'k' });
    expect(missing.statusCode).toBe(404);
  });

  it('a grant that would take a balance past 2^53 − 1 is refused naming amount, and changes nothing', async () => {
    const org = (await createTenant(app, op, 'Big Co')).organizationId;
    const actor = { type: 'system' as const, id: 'test' };
    await credits.grant(tdb.db, { organizationId: org, amount: Number.MAX_SAFE_INTEGER, idempotencyKey: 'big-1', actor });
    const before = await credits.getCredits(tdb.db, org);
    const err = await credits.grant(tdb.db, { organizationId: org, amount: 1, idempotencyKey: 'big-2', actor }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'validation_error', fields: [{ field: 'amount' }] });
    expect(await credits.getCredits(tdb.db, org)).toEqual(before);
  });

  it('an hourly cap the database cannot store is a 422 naming it', async () => {
    const res = await app.inject({
      method: 'PATCH',
      url: `/v1/workspaces/${acme.workspaceId}/sending-rules`,
      headers: bearer(acme.orgKey),
      payload: { hourly_cap: 3_000_000_000 },
    });
    expect(res.statusCode, res.body).toBe(422);
    expect(JSON.stringify(res.json())).toContain('hourly_cap');
  });

  it("a tenant sees only its own credits and ledger", async () => {
    const other = await app.inject({
      method: 'GET',
      url: `/v1/credits?organization_id=${acme.organizationId}`,
      headers: bearer(globex.orgKey),
    });
    expect(other.statusCode).toBe(404);
    const ledger = await app.inject({ method: 'GET', url: '/v1/credits/ledger', headers: bearer(globex.orgKey) });
    expect(ledger.json().data).toEqual([]);
    const opNeedsOrg = await app.inject({ method: 'GET', url: '/v1/credits', headers: bearer(op) });
    expect(opNeedsOrg.statusCode).toBe(422);
  });

  it('lists the ledger newest first with kind and time filters, paginated, and exports CSV', async () => {
    const actor = { type: 'system' as const, id: 't' };
    await credits.reserve(tdb.db, {
      organizationId: acme.organizationId,
      items: Array.from({ length: 5 }, (_, i) => ({ messageId: `msg_${i}`, amount: 1 })),
      idempotencyKey: 'r1',
      actor,
    });
    const all: { kind: string; seq: number }[] = [];
    let cursor: string | null = null;
    do {
      const res = await app.inject({
        method: 'GET',
        url: `/v1/credits/ledger?limit=2${cursor ? `&cursor=${cursor}` : ''}`,
        headers: bearer(acme.orgKey),
      });
      const page = res.json() as { data: { kind: string; seq: number }[]; next_cursor: string | null };
      all.push(...page.data);
      cursor = page.next_cursor;
    } while (cursor);
    expect(all.map((e) => e.kind)).toEqual(['reserve', 'reserve', 'reserve', 'reserve', 'reserve', 'adjust', 'grant']);
    expect([...all].sort((a, b) => b.seq - a.seq)).toEqual(all);

    const onlyReserve = await app.inject({ method: 'GET', url: '/v1/credits/ledger?kind=grant&kind=adjust', headers: bearer(acme.orgKey) });
    expect(onlyReserve.json().data.map((e: { kind: string }) => e.kind)).toEqual(['adjust', 'grant']);
    const future = new Date(Date.now() + 60_000).toISOString();
    const none = await app.inject({ method: 'GET', url: `/v1/credits/ledger?from=${future}`, headers: bearer(acme.orgKey) });
    expect(none.json().data).toEqual([]);
    const badKind = await app.inject({ method: 'GET', url: '/v1/credits/ledger?kind=free_money', headers: bearer(acme.orgKey) });
    expect(badKind.statusCode).toBe(422);
    const badDate = await app.inject({ method: 'GET', url: '/v1/credits/ledger?from=yesterday', headers: bearer(acme.orgKey) });
    expect(badDate.statusCode).toBe(422);

    const csv = await app.inject({ method: 'GET', url: '/v1/credits/ledger', headers: { ...bearer(acme.orgKey), accept: 'text/csv' } });
    expect(csv.statusCode).toBe(200);
    expect(csv.headers['content-type']).toContain('text/csv');
    const lines = csv.body.trim().split('\n');
    expect(lines[0]).toMatch(/^seq,id,created_at,kind,/);
    expect(lines.length).toBe(1 + 7);
    expect(lines[1]).toContain(',reserve,');
  });

  it('low-balance threshold and alerts through the API', async () => {
    const set = await app.inject({
      method: 'PUT',
      url: '/v1/credits/settings',
      headers: bearer(acme.orgKey),
      payload: { low_balance_threshold: 100 },
    });
    expect(set.statusCode).toBe(200);
    expect(set.json()).toMatchObject({ low_balance_threshold: 100, low_balance: true });
    await adjust(acme.organizationId, op, { amount: -1, reason: 'tiny', idempotency_key: 'tiny' });
    const alerts = await app.inject({ method: 'GET', url: '/v1/credits/alerts', headers: bearer(acme.orgKey) });
    expect(alerts.json().data).toMatchObject([{ kind: 'low_balance', threshold: 100 }]);
    const wsCannot = await app.inject({
      method: 'PUT',
      url: '/v1/credits/settings',
      headers: bearer(acme.workspaceKey),
      payload: { low_balance_threshold: 1 },
    });
    expect(wsCannot.statusCode).toBe(403);
  });

  it('`credence ledger verify` exits 0 when clean, prints the mismatch and exits 1 when not; /metrics shows the count', async () => {
    const run = () =>
      spawnSync(process.execPath, ['bin/credence.mjs', 'ledger', 'verify'], {
        env: { PATH: process.env.PATH, DATABASE_URL: tdb.url, LOG_LEVEL: 'silent' },
        encoding: 'utf8',
        timeout: 60_000,
      });
    const clean = run();
    expect(clean.stdout).toMatch(/ledger verify: accounts=\d+ mismatches=0/);
    expect(clean.status).toBe(0);
    await sql`update credit_accounts set spent = spent + 3 where organization_id = ${acme.organizationId}`.execute(tdb.db);
    const broken = run();
    expect(broken.status).toBe(1);
    expect(broken.stdout).toContain(`MISMATCH ${acme.organizationId} spent: stored=3 computed=0`);
    const metrics = await app.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toMatch(/credence_ledger_mismatches 1/);
    await sql`update credit_accounts set spent = spent - 3 where organization_id = ${acme.organizationId}`.execute(tdb.db);
  });
});
