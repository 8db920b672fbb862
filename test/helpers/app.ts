import type { Carrier } from '../../src/carriers/index.ts';
import { buildApp } from '../../src/http/app.ts';
import type { BillingDeps } from '../../src/payments/index.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { bootstrapOperatorKey } from '../../src/tenancy/index.ts';
import type { TestDatabase } from './db.ts';

export const silentLog = createLogger('silent');

export type TestApp = Awaited<ReturnType<typeof buildApp>>;

/** Webhooks are rejected unless a test brings a real carrier adapter. */
const noCarrier = { validateWebhook: () => false };

export async function buildTestApp(
  tdb: TestDatabase,
  options: {
    carrier?: Pick<Carrier, 'validateWebhook'>;
    publicUrl?: string;
    billing?: BillingDeps;
    /** the API's flow control (absent: none, as the other tests were written) */
    intake?: { backlogLimit: number; backlogWaitMs: number };
    streamHeartbeatMs?: number;
  } = {},
): Promise<TestApp> {
  return buildApp({
    config: { publicUrl: options.publicUrl ?? 'http://localhost:3000' },
    db: tdb.db,
    pipelineDb: tdb.pipelineDb,
    pool: tdb.pool,
    log: silentLog,
    carrier: options.carrier ?? noCarrier,
    ...(options.billing && { billing: options.billing }),
    ...(options.intake && { intake: options.intake }),
    ...(options.streamHeartbeatMs !== undefined && { streamHeartbeatMs: options.streamHeartbeatMs }),
  });
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

export interface Tenant {
  organizationId: string;
  orgKey: string;
  workspaceId: string;
  workspaceKey: string;
}

/** The operator key of a fresh test database (created on first call). */
export async function operatorKey(tdb: TestDatabase): Promise<string> {
  const created = await bootstrapOperatorKey(tdb.db);
  if (created === undefined) throw new Error('operator key already bootstrapped in this database');
  return created.key;
}

/** An organization with one workspace and a key for each, made through the API. */
export async function createTenant(app: TestApp, opKey: string, name = 'Acme'): Promise<Tenant> {
  const org = await app.inject({
    method: 'POST',
    url: '/v1/organizations',
    headers: bearer(opKey),
    payload: { name },
  });
  if (org.statusCode !== 201) throw new Error(`create org: ${org.statusCode} ${org.body}`);
  const { organization, admin_key } = org.json() as {
    organization: { id: string };
    admin_key: { key: string };
  };
  const ws = await app.inject({
    method: 'POST',
    url: '/v1/workspaces',
    headers: bearer(admin_key.key),
    payload: { name: `${name} shop`, home_country: 'US', timezone: 'America/New_York' },
  });
  if (ws.statusCode !== 201) throw new Error(`create workspace: ${ws.statusCode} ${ws.body}`);
  const workspaceId = (ws.json() as { id: string }).id;
  const key = await app.inject({
    method: 'POST',
    url: '/v1/api-keys',
    headers: bearer(admin_key.key),
    payload: { name: 'shop key', scope: 'workspace', workspace_id: workspaceId },
  });
  if (key.statusCode !== 201) throw new Error(`create key: ${key.statusCode} ${key.body}`);
  return {
    organizationId: organization.id,
    orgKey: admin_key.key,
    workspaceId,
    workspaceKey: (key.json() as { key: string }).key,
  };
}
