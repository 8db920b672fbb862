/**
 * npm run bench:campaign — a 100,000-recipient marketing campaign (consent
 * recorded, quiet hours open) through `credence api` + `credence worker` to
 * the carrier simulator (its own process, latency 0–5 ms, no faults), on an
 * embedded, durable PostgreSQL; then, in the same run, the carrier ceiling:
 * the same number of sends straight to the simulator through the adapter.
 * Prints the worker's peak RSS (VmHWM) too.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import * as consent from '../src/consent/index.ts';
import { newId } from '../src/shared/ids.ts';
import { daytimeZone } from '../test/helpers/campaigns.ts';
import { killAllSpawned } from '../test/helpers/process.ts';
import { ceilingBefore, measureCarrierCeiling } from './carrier-ceiling.ts';
import { benchDatabase, cpuSnapshot, printCpu, printLoggedProblems, printStatementStats } from './harness.ts';
import { startBenchStack } from './stack.ts';

const COUNT = Number(process.env.BENCH_CAMPAIGN_RECIPIENTS ?? 100_000);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void killAllSpawned().finally(() => process.exit(130)));
}

async function peakRssMb(pid: number | undefined): Promise<number> {
  if (pid === undefined) return Number.NaN;
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN);
  return Math.round(kb / 1024);
}

const home = await fs.mkdtemp(path.join(os.tmpdir(), 'credence-bench-campaign-'));
const database = await benchDatabase(4);
try {
  const stack = await startBenchStack(home, database.url, COUNT * 2);
  const { simUrl, account, sim, api, worker, wsKey, call } = stack;
  const org = { organization: { id: stack.organizationId } };
  const ws = { id: stack.workspaceId };

  // The audience, written in bulk: contacts in a zone where it is early afternoon, each with marketing consent.
  process.stdout.write(`preparing ${COUNT} contacts with consent…\n`);
  const listId = newId('lst');
  const db = database.db;
  await sql`insert into contact_lists (id, organization_id, workspace_id, name) values (${listId}, ${org.organization.id}, ${ws.id}, 'bench')`.execute(db);
  const zone = daytimeZone();
  for (let i = 0; i < COUNT; i += 10_000) {
    const n = Math.min(10_000, COUNT - i);
    const contacts = Array.from({ length: n }, (_, k) => ({ id: newId('ct'), phone: `+1415${String(2_000_000 + i + k).padStart(7, '0')}`, first_name: `C${i + k}` }));
    await sql`insert into contacts (id, organization_id, workspace_id, phone, country, first_name, timezone)
      select x.id, ${org.organization.id}, ${ws.id}, x.phone, 'US', x.first_name, ${zone}
      from json_to_recordset(${JSON.stringify(contacts)}::json) as x(id text, phone text, first_name text)`.execute(db);
    await sql`insert into contact_list_members (list_id, contact_id) select ${listId}, unnest(${contacts.map((c) => c.id)}::text[])`.execute(db);
    await consent.appendConsentEvents(
      db,
      contacts.map((c) => ({
        organization_id: org.organization.id,
        workspace_id: ws.id,
        phone: c.phone,
        purpose: 'marketing' as const,
        action: 'granted' as const,
        source: 'import' as const,
        evidence: { bench: true },
        actor: 'bench',
      })),
    );
  }
  const campaign = (await call('POST', '/v1/campaigns', wsKey, {
    name: 'Bench campaign',
    body: 'Hi {{first_name|there}}, our spring sale starts today. Reply STOP to opt out.',
    audience: { type: 'list', id: listId },
  })) as { id: string };

  process.stdout.write(`carrier ceiling before the run (${COUNT} sends straight to the simulator)…\n`);
  const cpuCeiling = await cpuSnapshot();
  const before = await ceilingBefore({ simulatorUrl: simUrl, accountSid: account.sid, authToken: account.authToken, count: COUNT, concurrency: 50 });
  process.stdout.write('the ceiling run, where the CPU went (bench = the adapter and the callback sink):\n');
  printCpu(cpuCeiling, await cpuSnapshot(), COUNT);
  process.stdout.write(`running a ${COUNT}-recipient campaign…\n`);
  const cpu0 = await cpuSnapshot();
  const t0 = Date.now();
  await call('POST', `/v1/campaigns/${campaign.id}/start`, wsKey);
  const deadline = Date.now() + 20 * 60_000;
  let accepted = 0;
  for (;;) {
    accepted = ((await (await fetch(`${simUrl}/_sim/stats`)).json()) as { accepted: number }).accepted;
    if (accepted >= COUNT) break;
    if (Date.now() > deadline) throw new Error(`only ${accepted} of ${COUNT} reached the carrier`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const elapsed = Date.now() - t0;
  const throughput = Math.round((COUNT / elapsed) * 1000);
  const log = (await (await fetch(`${simUrl}/_sim/log`)).json()) as { to: string }[];
  const duplicates = log.length - new Set(log.map((m) => m.to)).size;
  const rss = await peakRssMb(worker.child.pid);
  printCpu(cpu0, await cpuSnapshot(), COUNT);
  await printStatementStats(db, COUNT);
  process.stdout.write(`campaign: ${COUNT} at the carrier ${(elapsed / 1000).toFixed(1)} s after start; duplicates=${duplicates}\n`);

  worker.child.kill('SIGTERM');
  api.child.kill('SIGTERM');
  await Promise.all([worker.exited, api.exited]);
  printLoggedProblems('worker', worker.output());
  printLoggedProblems('api', api.output());
  const after = await measureCarrierCeiling({ simulatorUrl: simUrl, accountSid: account.sid, authToken: account.authToken, count: COUNT, concurrency: 50 });
  const ceiling = Math.max(before, after);
  process.stdout.write(`ceiling: before=${before} after=${after}; the ratio uses the higher\n`);
  sim.child.kill('SIGTERM');
  await sim.exited;
  process.stdout.write(`campaign: throughput=${throughput} ceiling=${ceiling} ratio=${(throughput / ceiling).toFixed(2)} peak_rss_mb=${rss}\n`);
} finally {
  await killAllSpawned();
  await database.close();
  await fs.rm(home, { recursive: true, force: true });
}
