import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as consent from '../src/consent/index.ts';
import { CONSENT_ALLOWS, SUBSCRIPTION_OK } from '../src/messaging/dispatch.ts';
import { newId } from '../src/shared/ids.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { insertOrg } from './helpers/orgs.ts';

/**
 * The send path decides consent in SQL (credence_consent_state, inside the
 * claim's WHERE); the API derives it with the pure fold. They must agree on
 * every log, including back-dated events and ties.
 */
let tdb: TestDatabase;
let org: string;
let ws: string;

beforeAll(async () => {
  tdb = await createTestDatabase();
  org = await insertOrg(tdb.db);
  ws = newId('ws');
  await sql`insert into workspaces (id, organization_id, name, home_country, timezone) values (${ws}, ${org}, 'ws', 'US', 'America/New_York')`.execute(tdb.db);
});
afterAll(async () => {
  await tdb?.close();
});

const base = Date.parse('2026-01-01T00:00:00Z');
const event = fc.record({
  purpose: fc.constantFrom(...consent.CONSENT_PURPOSES),
  action: fc.constantFrom('granted' as const, 'revoked' as const, 'requested' as const),
  // few distinct instants, so ties (decided by seq) are common
  minute: fc.integer({ min: 0, max: 5 }),
});

let counter = 0;

describe('consent: SQL closed form == pure fold', () => {
  it('agree on random logs, per purpose, and so does the send-time verdict', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(event, { maxLength: 12 }), async (events) => {
        const phone = `+1415555${String(counter++ % 10_000).padStart(4, '0')}`;
        const ws2 = newId('ws');
        await sql`insert into workspaces (id, organization_id, name, home_country, timezone) values (${ws2}, ${org}, 'ws', 'US', 'America/New_York')`.execute(tdb.db);
        const rows = await consent.appendConsentEvents(
          tdb.db,
          events.map((e) => ({
            organization_id: org,
            workspace_id: ws2,
            phone,
            purpose: e.purpose,
            action: e.action,
            source: 'api' as const,
            evidence: {},
            actor: 'test',
            occurred_at: new Date(base + e.minute * 60_000).toISOString(),
          })),
        );
        const pure = consent.deriveConsent(consent.toEvents(rows));
        const fromSql = await consent.sqlConsentStates(tdb.db, ws2, phone);
        expect(fromSql).toEqual(pure);
        for (const purpose of consent.CONSENT_PURPOSES) {
          // the scalar function, and the inlined form the send path uses
          const { rows: v } = await sql<{ ok: boolean; inlined: boolean }>`select credence_consent_allows(${ws2}, ${phone}, ${purpose}, 'api') as ok,
            ${CONSENT_ALLOWS} as inlined from (select ${ws2}::text as workspace_id, ${phone}::text as to_number, ${purpose}::text as purpose, 'api'::text as producer) m`.execute(tdb.db);
          expect(v[0]!.ok).toBe(consent.consentAllows(purpose, pure[purpose]));
          expect(v[0]!.inlined).toBe(v[0]!.ok);
        }
      }),
      { numRuns: 120 },
    );
  });
});

describe('send-time checks in SQL', () => {
  it('are planned into the statement that uses them, not called once per row', async () => {
    const { rows } = await sql<{ 'QUERY PLAN': unknown }>`explain (verbose, format json)
      select ${CONSENT_ALLOWS}, ${SUBSCRIPTION_OK} from messages m`.execute(tdb.db);
    const plan = JSON.stringify(rows[0]!['QUERY PLAN']);
    // inlined: the plan reads the tables and names no function of ours
    expect(plan).toContain('consent_events');
    expect(plan).toContain('subscriptions');
    expect(plan).not.toMatch(/credence_(consent|subscription|phone)/);
  });

  it('a system reply needs no consent; a revoked number refuses transactional sends; an inactive subscription stops the organization', async () => {
    const phone = '+14155550777';
    await consent.appendConsentEvents(tdb.db, [
      { organization_id: org, workspace_id: ws, phone, purpose: 'transactional', action: 'revoked', source: 'api', evidence: {}, actor: 't' },
    ]);
    const check = async (producer: string, purpose: string) => {
      const { rows } = await sql<{ ok: boolean }>`select ${CONSENT_ALLOWS} as ok
        from (select ${ws}::text as workspace_id, ${phone}::text as to_number, ${purpose}::text as purpose, ${producer}::text as producer) m`.execute(tdb.db);
      return rows[0]!.ok;
    };
    expect(await check('system', 'transactional')).toBe(true);
    expect(await check('api', 'transactional')).toBe(false);
    expect(await check('api', 'appointment')).toBe(true);
    expect(await check('campaign', 'marketing')).toBe(false);
    const subscription = async () => {
      const { rows } = await sql<{ ok: boolean }>`select ${SUBSCRIPTION_OK} as ok from (select ${org}::text as organization_id) m`.execute(tdb.db);
      return rows[0]!.ok;
    };
    expect(await subscription()).toBe(true); // no subscription at all: packs only
  });
});

describe('consent log is append-only', () => {
  it('refuses UPDATE and DELETE, except the erasure of the plain number and evidence', async () => {
    const [row] = await consent.appendConsentEvents(tdb.db, [
      { organization_id: org, workspace_id: ws, phone: '+14155550999', purpose: 'marketing', action: 'granted', source: 'api', evidence: { ip: '1.2.3.4' }, actor: 't' },
    ]);
    await expect(sql`update consent_events set action = 'revoked' where seq = ${row!.seq}`.execute(tdb.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from consent_events where seq = ${row!.seq}`.execute(tdb.db)).rejects.toThrow(/append-only/);
    await expect(sql`update consent_events set phone = null, evidence = '{"erased": true}', action = 'revoked' where seq = ${row!.seq}`.execute(tdb.db)).rejects.toThrow(
      /append-only/,
    );
    expect(await consent.eraseConsentEvents(tdb.db, ws, '+14155550999')).toBe(1);
    const history = await consent.consentHistory(tdb.db, ws, '+14155550999');
    expect(history).toMatchObject([{ phone: null, evidence: { erased: true }, action: 'granted' }]);
  });
});
