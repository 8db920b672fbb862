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
import { benchDatabase, cpuSnapshot, messageTrail, printCallbackStats, printCpu, printLoggedProblems, printStatementStats } from './harness.ts';
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

/** No message reached the carrier for 10 s: the messages still on their way, by status, a few of their trails, and the job queue. */
async function printStall(db: typeof database.db, campaignId: string, accepted: number): Promise<void> {
  process.stdout.write(`stall: ${accepted} of ${COUNT} at the carrier and no progress for 10 s\n`);
  const { rows: counts } = await sql<{ status: string; reason: string | null; n: number }>`
    select status, status_reason as reason, count(*)::int as n from messages
    where campaign_id = ${campaignId} and status not in ('sent', 'delivered') group by 1, 2 order by 3 desc`.execute(db);
  for (const c of counts) process.stdout.write(`  ${c.n} ${c.status}${c.reason ? ` (${c.reason})` : ''}\n`);
  const { rows: waiting } = await sql<{ id: string }>`
    select id from messages where campaign_id = ${campaignId} and status not in ('sent', 'delivered') order by id limit 3`.execute(db);
  for (const m of waiting) process.stdout.write(`  ${m.id}: ${await messageTrail(db, m.id)}\n`);
  const { rows: recipients } = await sql<{ messages: number; total: number; status: string }>`
    select c.status, (select count(*)::int from messages m where m.campaign_id = c.id) as messages, (select count(*)::int from campaign_recipients r where r.campaign_id = c.id) as total
    from campaigns c where c.id = ${campaignId}`.execute(db);
  for (const r of recipients) process.stdout.write(`  campaign ${r.status}: ${r.messages} messages of ${r.total} recipients\n`);
  const { rows: jobs } = await sql<{ task: string; n: number; attempts: number; locked: boolean; run_at: Date; last_error: string | null }>`
    select task_identifier as task, count(*)::int as n, max(attempts)::int as attempts, bool_or(locked_at is not null) as locked, min(run_at) as run_at, max(last_error) as last_error
    from graphile_worker.jobs group by 1`.execute(db);
  for (const j of jobs)
    process.stdout.write(`  jobs ${j.task}: ${j.n}, attempts ≤ ${j.attempts}, locked ${j.locked}, first run_at ${j.run_at.toISOString()}${j.last_error ? `, last error ${j.last_error.slice(0, 200)}` : ''}\n`);
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
  let progressAt = Date.now();
  let stallReported = false;
  for (;;) {
    const now = ((await (await fetch(`${simUrl}/_sim/stats`)).json()) as { accepted: number }).accepted;
    if (now !== accepted) progressAt = Date.now();
    accepted = now;
    if (accepted >= COUNT) break;
    if (Date.now() > deadline) throw new Error(`only ${accepted} of ${COUNT} reached the carrier`);
    if (!stallReported && accepted > 0 && Date.now() - progressAt > 10_000) {
      // A stall: show where the messages that have not reached the carrier wait, once.
      stallReported = true;
      await printStall(db, campaign.id, accepted);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const elapsed = Date.now() - t0;
  const throughput = Math.round((COUNT / elapsed) * 1000);
  const log = (await (await fetch(`${simUrl}/_sim/log`)).json()) as { to: string }[];
  const duplicates = log.length - new Set(log.map((m) => m.to)).size;
  const rss = await peakRssMb(worker.child.pid);
  printCpu(cpu0, await cpuSnapshot(), COUNT);
  await printStatementStats(db, COUNT);
  await printCallbackStats(simUrl);
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
