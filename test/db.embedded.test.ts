import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { embeddedAddresses } from '../src/db/embedded.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

/** How Credence's own processes reach the embedded PostgreSQL: its Unix socket, or TCP when a socket path would not fit. */
describe('the embedded server’s addresses', () => {
  it('a home with a short path: a socket in it, and the password survives the URL', () => {
    const password = 'p@ss/w:rd?&=#%';
    const a = embeddedAddresses('/tmp/credence-home', 54329, password);
    expect(a.socketDir).toBe('/tmp/credence-home/socket');
    const url = new URL(a.urlOf('credence'));
    expect(url.searchParams.get('host')).toBe('/tmp/credence-home/socket');
    expect(url.port).toBe('54329');
    expect(url.pathname).toBe('/credence');
    expect(decodeURIComponent(url.password)).toBe(password);
    expect(new URL(a.tcpUrlOf('postgres')).hostname).toBe('127.0.0.1');
  });

  it('a home whose socket path would pass the socket address limit: TCP on 127.0.0.1', () => {
    const a = embeddedAddresses(`/tmp/${'x'.repeat(90)}`, 54329, 'pw');
    expect(a.socketDir).toBeUndefined();
    const url = new URL(a.urlOf('credence'));
    expect(url.hostname).toBe('127.0.0.1');
    expect(url.searchParams.get('host')).toBeNull();
  });
});

describe.skipIf(process.env.TEST_DATABASE_URL !== undefined)('the test run’s own embedded server', () => {
  let tdb: TestDatabase;
  beforeAll(async () => {
    tdb = await createTestDatabase();
  });
  afterAll(async () => {
    await tdb?.close();
  });

  it('is reached through its Unix socket', async () => {
    expect(new URL(tdb.url).searchParams.get('host')).toMatch(/\/socket$/);
    // a session over a Unix socket has no server address
    const { rows } = await sql<{ addr: string | null }>`select inet_server_addr()::text as addr`.execute(tdb.db);
    expect(rows[0]!.addr).toBeNull();
  });
});
