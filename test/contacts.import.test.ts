import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { receiveImport, runContactImport } from '../src/contacts/index.ts';
import { createDb } from '../src/db/db.ts';
import { failingPool } from './helpers/failingPool.ts';
import { bearer, buildTestApp, createTenant, operatorKey, silentLog, type Tenant, type TestApp } from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

/**
 * CSV imports end to end: upload over HTTP (chunks in the database, the job
 * enqueued in the same transaction), the job run as the worker runs it, and
 * the results read back through the API. Expected counts come from a small
 * model of the generated file, not from the code under test.
 */
let tdb: TestDatabase;
let app: TestApp;
let op: string;
let a: Tenant;
let b: Tenant;

interface Imp {
  id: string;
  status: string;
  rows_total: number;
  rows_done: number;
  rows_imported: number;
  rows_merged: number;
  rows_invalid: number;
  consents_recorded: number;
  error: string | null;
}

const HEADER = 'Mobile,First Name,last_name,tz,consent_marketing,consent_transactional,Tier,Notes,Skip';
const MAPPING = JSON.stringify({ Mobile: 'phone', tz: 'timezone', Skip: 'ignore' });
const phoneOf = (i: number) => `+1212${201 + Math.floor(i / 10_000)}${String(i % 10_000).padStart(4, '0')}`;
const national = (e164: string) => `(${e164.slice(2, 5)}) ${e164.slice(5, 8)}-${e164.slice(8)}`;

interface Model {
  csv: string;
  total: number;
  imported: number;
  merged: number;
  invalid: Map<number, string>;
  consents: number;
  uniqueValid: number;
}

/**
 * A file of `rows` rows: national and international numbers, quoted commas
 * and newlines, duplicates of earlier rows (and of `existing` contacts), bad
 * phones, zones, consent words and field counts, consent columns.
 */
function generate(rows: number, existing: ReadonlySet<string> = new Set()): Model {
  const lines = [HEADER];
  const seen = new Set(existing);
  const validPhones = new Set<string>();
  const invalid = new Map<number, string>();
  let imported = 0;
  let merged = 0;
  let consents = 0;
  for (let i = 0; i < rows; i++) {
    const row = i + 2;
    let phone = i > 0 && i % 50 === 0 ? phoneOf(i - 25) : phoneOf(i);
    let tz = i % 6 === 0 ? 'America/Chicago' : '';
    const marketing = ['yes', '', 'No'][i % 3]!;
    const transactional = i % 5 === 0 ? 'granted' : '';
    const first = i % 50 === 0 ? '' : i % 7 === 0 ? '"Smith, John"' : `Name${i}`;
    const notes = i % 10 === 0 ? '"Line one, with comma\nline two ""quoted"""' : '';
    let fields = [i % 4 === 0 ? national(phone) : phone, first, `Last${i}`, tz, marketing, transactional, i % 50 === 0 ? 'dup' : `t${i % 3}`, notes, 'x'];
    let bad: string | undefined;
    if (i % 97 === 5) {
      phone = '555-01';
      fields[0] = phone;
      bad = 'phone';
    } else if (i % 89 === 7) {
      tz = 'Mars/Base';
      fields[3] = tz;
      bad = 'timezone';
    } else if (i % 83 === 3) {
      fields[4] = 'maybe';
      bad = 'consent_marketing';
    } else if (i % 211 === 11) {
      fields = fields.slice(0, 8);
      bad = '';
    }
    lines.push(fields.join(','));
    if (bad !== undefined) {
      invalid.set(row, bad);
      continue;
    }
    if (seen.has(phone)) merged++;
    else imported++;
    seen.add(phone);
    validPhones.add(phone);
    consents += (marketing === '' ? 0 : 1) + (transactional === '' ? 0 : 1);
  }
  return { csv: `${lines.join('\r\n')}\r\n`, total: rows, imported, merged, invalid, consents, uniqueValid: validPhones.size };
}

async function upload(key: string, csv: string | Buffer, query = '', contentType = 'text/csv') {
  const res = await app.inject({
    method: 'POST',
    url: `/v1/contacts/imports${query}`,
    headers: { ...bearer(key), 'content-type': contentType },
    payload: csv,
  });
  return { status: res.statusCode, body: res.json() as Imp & { errors?: { field: string; reason: string }[] } };
}

async function getImport(key: string, id: string): Promise<Imp> {
  const res = await app.inject({ method: 'GET', url: `/v1/contacts/imports/${id}`, headers: bearer(key) });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as Imp;
}

async function allErrors(key: string, id: string): Promise<{ row_number: number; field: string | null; reason: string; message: string }[]> {
  const out = [];
  let cursor: string | null = null;
  do {
    const res = await app.inject({
      method: 'GET',
      url: `/v1/contacts/imports/${id}/errors?limit=200${cursor ? `&cursor=${cursor}` : ''}`,
      headers: bearer(key),
    });
    expect(res.statusCode, res.body).toBe(200);
    const page = res.json() as { data: { row_number: number; field: string | null; reason: string; message: string }[]; next_cursor: string | null };
    out.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor !== null);
  return out;
}

const count = async (query: ReturnType<typeof sql<{ n: number }>>) => (await query.execute(tdb.db)).rows[0]!.n;
const consentCount = (importId: string) =>
  count(sql<{ n: number }>`select count(*)::int as n from consent_events where source = 'import' and evidence->>'import_id' = ${importId}`);

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

describe('refused uploads store nothing', () => {
  it('422 (naming the field) or 415, and no import, chunk or job is left behind', async () => {
    const other = await app.inject({ method: 'POST', url: '/v1/lists', headers: bearer(b.workspaceKey), payload: { name: 'theirs' } });
    const cases: [string | Buffer, string, string, number][] = [
      ['', '', 'body', 422],
      ['phone,first_name\r\n', '', 'body', 422],
      ['\n\n\n', '', 'body', 422],
      ['name,email\nAnn,a@example.com\n', '', 'body', 422],
      ['Mobile\n+14155550100\n', `?mapping=${encodeURIComponent('{"Mobile":"telephone"}')}`, 'mapping.Mobile', 422],
      ['Mobile\n+14155550100\n', `?mapping=${encodeURIComponent('{"Cell":"phone"}')}`, 'mapping.Cell', 422],
      ['Mobile\n+14155550100\n', '?mapping=%7Bnot-json', 'mapping', 422],
      ['phone\n+14155550100\n', `?list_id=${(other.json() as { id: string }).id}`, 'list_id', 422],
      ['phone\n+14155550100\n', '?default_country=ZZ', 'default_country', 422],
      ['phone,phone\n+14155550100,+14155550101\n', '', 'body', 422],
      [`phone,${'x'.repeat(70_000)}\n+14155550100,1\n`, '', 'body', 422],
      [`phone,${'y'.repeat(101)}\n+14155550100,1\n`, '', 'body', 422],
      // a header PostgreSQL could not store (the mapping keeps every header), and one that would set a prototype
      ['phone,no\u0000te\n+14155550100,1\n', '', 'body', 422],
      ['phone,__proto__\n+14155550100,1\n', '', 'body', 422],
    ];
    for (const [csv, query, field, status] of cases) {
      const res = await upload(a.workspaceKey, csv, query);
      expect(res.status, `${query} ${JSON.stringify(res.body)}`).toBe(status);
      expect(res.body.errors?.map((e) => e.field)).toContain(field);
    }
    expect((await upload(a.workspaceKey, 'phone\n+14155550100\n', '', 'application/octet-stream')).status).toBe(415);
    expect((await upload(a.orgKey, 'phone\n+14155550100\n')).status).toBe(422);
    // over the size limit, found while streaming: the whole upload rolls back
    const big = Readable.from((function* () {
      yield Buffer.from('phone\n');
      for (let i = 0; i < 100; i++) yield Buffer.from('+14155550100\n'.repeat(100));
    })());
    const scope = { organizationId: a.organizationId, workspaceId: a.workspaceId };
    expect(await receiveImport(tdb.db, scope, big, { actor: 'test', maxBytes: 50_000 })).toEqual({ outcome: 'too_large', maxBytes: 50_000 });
    expect(await count(sql<{ n: number }>`select count(*)::int as n from contact_imports`)).toBe(0);
    expect(await count(sql<{ n: number }>`select count(*)::int as n from contact_import_chunks`)).toBe(0);
    expect(await count(sql<{ n: number }>`select count(*)::int as n from graphile_worker._private_jobs`)).toBe(0);
  });
});

describe('a 20,000-row import', () => {
  let model: Model;
  let id: string;
  let listId: string;
  const existing = new Set([phoneOf(125), phoneOf(2001), phoneOf(19_999)]);

  beforeAll(async () => {
    for (const p of existing) {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/contacts',
        headers: bearer(a.workspaceKey),
        payload: { phone: p, first_name: 'Pre', last_name: 'Existing', attributes: { source: 'api' } },
      });
      expect(res.statusCode, res.body).toBe(201);
    }
    model = generate(20_000, existing);
    listId = ((await app.inject({ method: 'POST', url: '/v1/lists', headers: bearer(a.workspaceKey), payload: { name: 'Imported' } })).json() as { id: string }).id;
  });

  it('upload: 202 queued, rows counted (quoted newlines inside a row do not count), chunks of 1 MiB, the job enqueued', async () => {
    expect(model.csv.length).toBeGreaterThan(1024 * 1024); // more than one chunk
    const res = await upload(a.workspaceKey, model.csv, `?mapping=${encodeURIComponent(MAPPING)}&list_id=${listId}&default_country=US`);
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    id = res.body.id;
    expect(res.body).toMatchObject({ status: 'queued', rows_total: 20_000, rows_done: 0, list_id: listId, default_country: 'US' });
    expect((res.body as unknown as { mapping: Record<string, string> }).mapping).toMatchObject({
      Mobile: 'phone',
      'First Name': 'first_name',
      tz: 'timezone',
      Tier: 'attributes.Tier',
      Skip: 'ignore',
    });
    const chunks = (await sql<{ seq: number; size: number }>`select seq, length(data) as size from contact_import_chunks
      where import_id = ${id} order by seq`.execute(tdb.db)).rows;
    expect(chunks.map((c) => c.seq)).toEqual([0, 1]);
    expect(chunks[0]!.size).toBe(1024 * 1024);
    expect(chunks[0]!.size + chunks[1]!.size).toBe(Buffer.byteLength(model.csv));
    const jobs = (await sql<{ payload: unknown }>`select payload from graphile_worker._private_jobs j
      join graphile_worker._private_tasks t on t.id = j.task_id where t.identifier = 'contact_import'`.execute(tdb.db)).rows;
    expect(jobs.map((j) => j.payload)).toEqual([{ importId: id }]);
  });

  it('the job: exact counts, progress only moves forward and reaches the total', async () => {
    const progress: number[] = [];
    let running = true;
    const watch = (async () => {
      while (running) {
        progress.push((await getImport(a.workspaceKey, id)).rows_done);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const started = Date.now();
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: id });
    process.stdout.write(`20,000-row import job: ${Date.now() - started} ms\n`);
    running = false;
    await watch;
    expect(progress).toEqual([...progress].sort((x, y) => x - y));
    expect(progress.every((p) => p <= 20_000)).toBe(true);
    const done = await getImport(a.workspaceKey, id);
    expect(done).toMatchObject({
      status: 'completed',
      rows_total: 20_000,
      rows_done: 20_000,
      rows_imported: model.imported,
      rows_merged: model.merged,
      rows_invalid: model.invalid.size,
      consents_recorded: model.consents,
      error: null,
    });
    expect(model.imported + model.merged + model.invalid.size).toBe(20_000);
    expect(await count(sql<{ n: number }>`select count(*)::int as n from contacts where workspace_id = ${a.workspaceId}`)).toBe(
      existing.size + model.imported,
    );
    const list = await app.inject({ method: 'GET', url: `/v1/lists/${listId}`, headers: bearer(a.workspaceKey) });
    expect((list.json() as { member_count: number }).member_count).toBe(model.uniqueValid);
    expect(await count(sql<{ n: number }>`select count(*)::int as n from contact_import_chunks where import_id = ${id}`)).toBe(0);
  });

  it('every refused row is listed with its row number (header = row 1), field and reason', async () => {
    const errors = await allErrors(a.workspaceKey, id);
    expect(errors.map((e) => e.row_number)).toEqual([...model.invalid.keys()]);
    for (const e of errors) expect(e.field ?? '').toBe(model.invalid.get(e.row_number));
    const phoneError = errors.find((e) => e.field === 'phone')!;
    expect(phoneError.message).toBe(`row ${phoneError.row_number}: phone: ${phoneError.reason}`);
    // the number itself is not repeated: an erasure finds numbers by their E.164 form, not in reasons
    expect(phoneError.reason).toMatch(/^is not a (valid )?phone number$/);
    expect(errors.find((e) => e.field === null)!.reason).toBe('has 8 fields, the header has 9');
  });

  it('quoted commas and newlines, merges (into existing contacts and within the file), national numbers', async () => {
    const byPhone = async (p: string) => {
      const res = await app.inject({ method: 'GET', url: `/v1/contacts?phone=${encodeURIComponent(p)}`, headers: bearer(a.workspaceKey) });
      return (res.json() as { data: Record<string, unknown>[] }).data[0]!;
    };
    // row for i = 70: quoted first name with a comma and quoted notes with a newline and quotes; national format
    expect(await byPhone(phoneOf(70))).toMatchObject({
      first_name: 'Smith, John',
      last_name: 'Last70',
      attributes: { Tier: 't1', Notes: 'Line one, with comma\nline two "quoted"' },
    });
    // i = 125 existed (Pre Existing, source api) and is repeated by i = 150: non-empty values win, attributes merge
    expect(await byPhone(phoneOf(125))).toMatchObject({ first_name: 'Name125', last_name: 'Last150', attributes: { source: 'api', Tier: 'dup' } });
    // i = 25 and its repeat i = 50 (empty first name, Tier "dup"): the first name stays, the tier is the later one
    expect(await byPhone(phoneOf(25))).toMatchObject({ first_name: 'Name25', last_name: 'Last50', timezone: null, attributes: { Tier: 'dup' } });
    expect(await byPhone(phoneOf(6))).toMatchObject({ timezone: 'America/Chicago', country: 'US' });
    expect(Object.keys((await byPhone(phoneOf(1))).attributes as object)).not.toContain('Skip');
  });

  it('consent recorded with the import as evidence, once per row and purpose', async () => {
    expect(await consentCount(id)).toBe(model.consents);
    const { rows } = await sql<{ purpose: string; action: string; evidence: unknown; actor: string }>`select purpose, action, evidence, actor
      from consent_events where phone = ${phoneOf(9)} order by seq`.execute(tdb.db);
    expect(rows).toEqual([{ purpose: 'marketing', action: 'granted', evidence: { import_id: id, row_number: 11 }, actor: expect.stringMatching(/^key_/) }]);
    const res = await app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(phoneOf(15))}`, headers: bearer(a.workspaceKey) });
    expect((res.json() as { state: Record<string, string> }).state).toMatchObject({ marketing: 'granted', transactional: 'granted' });
    const revoked = await app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent(phoneOf(2))}`, headers: bearer(a.workspaceKey) });
    expect((revoked.json() as { state: Record<string, string> }).state).toMatchObject({ marketing: 'revoked', transactional: 'none' });
  });

  it('running the job again changes nothing', async () => {
    const snapshot = async () => ({
      imp: await getImport(a.workspaceKey, id),
      contacts: (await sql`select id, first_name, attributes, updated_at from contacts where workspace_id = ${a.workspaceId} order by id`.execute(tdb.db)).rows,
      consents: await consentCount(id),
      errors: await count(sql<{ n: number }>`select count(*)::int as n from contact_import_errors where import_id = ${id}`),
    });
    const before = await snapshot();
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: id });
    expect(await snapshot()).toEqual(before);
  });

  it("another tenant's import is a 404", async () => {
    for (const url of [`/v1/contacts/imports/${id}`, `/v1/contacts/imports/${id}/errors`]) {
      expect((await app.inject({ method: 'GET', url, headers: bearer(b.workspaceKey) })).statusCode).toBe(404);
    }
    const list = await app.inject({ method: 'GET', url: '/v1/contacts/imports', headers: bearer(b.workspaceKey) });
    expect((list.json() as { data: unknown[] }).data).toEqual([]);
  });
});

describe('crashes and reruns', () => {
  it('a batch that dies before commit leaves nothing of itself; the rerun gives exactly the uninterrupted result', async () => {
    const t = await createTenant(app, op, 'Crashy');
    const model = generate(5_000);
    const res = await upload(t.workspaceKey, model.csv, `?mapping=${encodeURIComponent(MAPPING)}&default_country=US`);
    expect(res.status).toBe(202);
    // a pool whose third progress update fails: the worker dies inside the batch transaction
    let updates = 0;
    const pool = failingPool(
      tdb.url,
      (text) => (text.includes('rows_done = rows_done +') && ++updates === 3 ? new Error('worker died') : undefined),
      2,
    );
    const crashing = createDb(pool);
    await expect(runContactImport({ db: crashing, log: silentLog }, { importId: res.body.id })).rejects.toThrow('worker died');
    await crashing.destroy();
    const mid = await getImport(t.workspaceKey, res.body.id);
    expect(mid).toMatchObject({ status: 'running', rows_done: 2_000 });
    expect(await consentCount(res.body.id)).toBe(mid.consents_recorded);

    await runContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id });
    expect(await getImport(t.workspaceKey, res.body.id)).toMatchObject({
      status: 'completed',
      rows_done: 5_000,
      rows_imported: model.imported,
      rows_merged: model.merged,
      rows_invalid: model.invalid.size,
      consents_recorded: model.consents,
    });
    expect(await consentCount(res.body.id)).toBe(model.consents);
    expect(await count(sql<{ n: number }>`select count(*)::int as n from contacts where workspace_id = ${t.workspaceId}`)).toBe(model.imported);
  });

  it('two runs at once write every row once', async () => {
    const t = await createTenant(app, op, 'Twice');
    const model = generate(4_000);
    const res = await upload(t.workspaceKey, model.csv, `?mapping=${encodeURIComponent(MAPPING)}&default_country=US`);
    const run = () => runContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id });
    await Promise.all([run(), run()]);
    expect(await getImport(t.workspaceKey, res.body.id)).toMatchObject({
      status: 'completed',
      rows_imported: model.imported,
      rows_merged: model.merged,
      rows_invalid: model.invalid.size,
      consents_recorded: model.consents,
    });
    expect(await consentCount(res.body.id)).toBe(model.consents);
    expect(await count(sql<{ n: number }>`select count(*)::int as n from contact_import_errors where import_id = ${res.body.id}`)).toBe(model.invalid.size);
  });
});

describe('corrupt files and odd encodings', () => {
  it('an unclosed quote fails the import with the reason; the rows before it stay imported', async () => {
    const csv = 'phone,first_name\n+14155550111,A\n+14155550112,B\n+14155550113,"C\n+14155550114,D\n';
    const res = await upload(a.workspaceKey, csv);
    expect(res.status).toBe(202);
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id });
    const done = await getImport(a.workspaceKey, res.body.id);
    expect(done).toMatchObject({ status: 'failed', rows_done: 2, rows_imported: 2 });
    expect(done.error).toMatch(/^row 4: the file is not valid CSV: .*[Qq]uote/);
  });

  it('a BOM, a charset parameter, an org key naming the workspace, no final newline', async () => {
    const csv = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('Phone,Prénom\n+33612345678,Zoé')]);
    const res = await upload(a.orgKey, csv, `?workspace_id=${a.workspaceId}`, 'text/csv; charset=utf-8');
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    expect(res.body.rows_total).toBe(1);
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id });
    expect(await getImport(a.workspaceKey, res.body.id)).toMatchObject({ status: 'completed', rows_imported: 1 });
    const c = await app.inject({ method: 'GET', url: `/v1/contacts?phone=%2B33612345678`, headers: bearer(a.workspaceKey) });
    expect((c.json() as { data: Record<string, unknown>[] }).data[0]).toMatchObject({ country: 'FR', attributes: { Prénom: 'Zoé' } });
  });

  it('a CRLF header over LF rows (and a line of only CR): every row is read; no row disappears into another', async () => {
    const csv = 'phone,first_name\r\n+14155550121,Ann\n+14155550122,Bob\n\r\n+14155550123,Cy\r\n+14155550124,Di\n';
    const res = await upload(a.workspaceKey, csv);
    expect(res.body.rows_total).toBe(4);
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id });
    expect(await getImport(a.workspaceKey, res.body.id)).toMatchObject({ status: 'completed', rows_total: 4, rows_done: 4, rows_imported: 4, rows_invalid: 0 });
    const { rows } = await sql<{ phone: string; first_name: string }>`select phone, first_name from contacts
      where workspace_id = ${a.workspaceId} and phone like '+1415555012%' order by phone`.execute(tdb.db);
    expect(rows).toEqual([
      { phone: '+14155550121', first_name: 'Ann' },
      { phone: '+14155550122', first_name: 'Bob' },
      { phone: '+14155550123', first_name: 'Cy' },
      { phone: '+14155550124', first_name: 'Di' },
    ]);
  });

  it('a NUL character in a cell is that row refused with its field and reason; the rows around it are imported', async () => {
    const csv = 'phone,first_name,tier\n+14155550131,A,gold\n+14155550132,B\u0000x,gold\n+14155550133,C,sil\u0000ver\n+14155550134,D,\n';
    const res = await upload(a.workspaceKey, csv);
    expect(res.status).toBe(202);
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id });
    expect(await getImport(a.workspaceKey, res.body.id)).toMatchObject({ status: 'completed', rows_done: 4, rows_imported: 2, rows_invalid: 2 });
    expect((await allErrors(a.workspaceKey, res.body.id)).map(({ row_number, field, reason }) => ({ row_number, field, reason }))).toEqual([
      { row_number: 3, field: 'first_name', reason: 'contains a NUL character (U+0000), which cannot be stored' },
      { row_number: 4, field: 'attributes.tier', reason: 'contains a NUL character (U+0000), which cannot be stored' },
    ]);
  });

  it('an import whose every attempt fails ends failed with the error, and its stored file is deleted', async () => {
    const res = await upload(a.workspaceKey, 'phone\n+14155550141\n');
    const { abandonContactImport } = await import('../src/contacts/index.ts');
    await abandonContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id }, 5, new Error('the database refused it'));
    const done = await getImport(a.workspaceKey, res.body.id);
    expect(done).toMatchObject({ status: 'failed', error: 'gave up after 5 attempts: the database refused it' });
    expect(await count(sql<{ n: number }>`select count(*)::int as n from contact_import_chunks where import_id = ${res.body.id}`)).toBe(0);
  });

  it("a refused phone's reason does not repeat the number (an erasure of it could not find it there)", async () => {
    const csv = 'phone,first_name\n(415) 555-0188,Ann\n+1415555018,Bob\n';
    const res = await upload(a.workspaceKey, csv);
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: res.body.id });
    const errors = await allErrors(a.workspaceKey, res.body.id);
    expect(errors.map(({ row_number, field, reason }) => ({ row_number, field, reason }))).toEqual([
      { row_number: 2, field: 'phone', reason: 'is not a phone number' }, // national, and no default_country
      { row_number: 3, field: 'phone', reason: 'is not a valid phone number' }, // a digit short
    ]);
    for (const e of errors) expect(`${e.reason} ${e.message}`).not.toMatch(/555.?018/);
  });

  it('a number erased after the file was uploaded is not imported from it (nor its consent); a file uploaded after the erasure is', async () => {
    const csv = 'phone,first_name,consent_marketing\n+14155550151,Erin,yes\n+14155550152,Finn,yes\n';
    const before = await upload(a.workspaceKey, csv);
    const erase = await app.inject({ method: 'POST', url: '/v1/privacy/erasures', headers: bearer(a.workspaceKey), payload: { phone: '+14155550151' } });
    expect(erase.statusCode, erase.body).toBe(200);
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: before.body.id });
    expect(await getImport(a.workspaceKey, before.body.id)).toMatchObject({ status: 'completed', rows_imported: 1, rows_invalid: 1, consents_recorded: 1 });
    expect((await allErrors(a.workspaceKey, before.body.id)).map(({ row_number, field, reason }) => ({ row_number, field, reason }))).toEqual([
      { row_number: 2, field: 'phone', reason: 'was erased (GDPR) after this file was uploaded: not imported' },
    ]);
    const erin = await sql<{ n: number }>`select count(*)::int as n from contacts where workspace_id = ${a.workspaceId} and phone = '+14155550151'`.execute(tdb.db);
    expect(erin.rows[0]!.n).toBe(0);
    const consent = await app.inject({ method: 'GET', url: `/v1/consents/${encodeURIComponent('+14155550151')}`, headers: bearer(a.workspaceKey) });
    expect((consent.json() as { state: Record<string, string> }).state.marketing).toBe('revoked');
    // new data, collected after the erasure
    const later = await upload(a.workspaceKey, csv);
    await runContactImport({ db: tdb.db, log: silentLog }, { importId: later.body.id });
    expect(await getImport(a.workspaceKey, later.body.id)).toMatchObject({ status: 'completed', rows_imported: 1, rows_merged: 1, rows_invalid: 0 });
  });
});
