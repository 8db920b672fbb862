/**
 * `npm run chaos [-- --seed N] [--scale small|default|large|<recipients>]`
 *
 * Starts PostgreSQL, the simulators, the API and several workers as real
 * processes, drives a seeded scenario of campaigns, payments, pauses,
 * STOPs, carrier faults, SIGKILLed workers and a PostgreSQL restart, waits
 * until everything settled, then checks the guarantees against the database
 * and the simulators' own logs. Exits 1 if any check found a violation.
 */
import { randomInt } from 'node:crypto';
import { sql } from 'kysely';
import { checkDuplicates, checkGates, checkLedger, checkLost, checkPaid, checkQuietHours, checkRates, type CheckReport, gather } from './checks.ts';
import { call, heal, newRecords, openWindowLater, perform, type Records, sampleBalances, setUp } from './driver.ts';
import { type Action, parseScale, planScenario, type Scale } from './scenario.ts';
import { type ChaosStack, FAST_CLOCK, startChaosStack } from './stack.ts';

function parseArgs(argv: string[]): { seed: number; scale: Scale } {
  let seed = randomInt(2 ** 31);
  let scale = parseScale('default') as Scale;
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split('=', 2);
    const value = inline ?? argv[++i];
    if (flag === '--seed' && value !== undefined && /^\d+$/.test(value)) seed = Number(value) % 2 ** 31;
    else if (flag === '--scale' && value !== undefined) {
      const s = parseScale(value);
      if ('error' in s) usage(s.error);
      scale = s as Scale;
    } else usage(`unknown or incomplete argument ${argv[i]}`);
  }
  return { seed, scale };
}

function usage(problem: string): never {
  process.stderr.write(`${problem}\nUsage: npm run chaos -- [--seed <n>] [--scale small|default|large|<recipients>]\n`);
  process.exit(2);
}

const started = Date.now();
const say = (line: string) => process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);

async function main(): Promise<number> {
  const { seed, scale } = parseArgs(process.argv.slice(2));
  const scenario = planScenario(seed, scale);
  say(`chaos run: seed=${seed} scale=${scale.name} (${scale.recipients} recipients, ${scale.apiSends} API sends, ${scale.workers} workers, actions for ${scale.actionWindowMs / 1000} s)`);
  say(`replay with: npm run chaos -- --seed ${seed} --scale ${scale.name}`);
  const records = newRecords();
  const stack = await startChaosStack(scenario, say);
  try {
    return await drive(stack, scenario, records, seed);
  } finally {
    await stack.close().catch((err: unknown) => say(`shutdown: ${(err as Error).message}`));
  }
}

async function drive(stack: ChaosStack, scenario: ReturnType<typeof planScenario>, records: Records, seed: number): Promise<number> {
  const now = new Date();
  say('setting up: organizations, workspaces, CSV imports with consent, campaigns, credits, a subscription');
  const world = await setUp(stack, scenario, records, now);
  const bloomWindow = scenario.workspaces.find((w) => w.windowOpensAfterMs !== undefined)!;
  await openWindowLater(stack, world, records, bloomWindow.key, new Date(Date.now() + bloomWindow.windowOpensAfterMs!), now);
  await call(`${stack.simUrl}/_sim/faults`, { method: 'PUT', body: scenario.faults });
  await call(`${stack.paymentsUrl}/_sim/delivery`, { method: 'PUT', body: scenario.delivery });

  say(`set up in ${((Date.now() - started) / 1000).toFixed(0)} s; starting ${world.campaigns.size} campaigns and ${scenario.actions.length} actions`);
  const t0 = Date.now();
  for (const c of world.campaigns.values()) {
    const ws = world.workspaces.get(c.plan.workspace)!;
    await call(`${stack.apiUrl}/v1/campaigns/${c.id}/start`, { key: ws.key, body: {} });
  }
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await sampleBalances(stack, records).catch(() => {}); // PostgreSQL may be restarting
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  // Each action at its time; the actions of one lane run in order, lanes
  // overlap. A gate's closing and reopening share a lane, so the reopening
  // never runs before the closing was seen to commit.
  const lanes = new Map<string, Action[]>();
  scenario.actions.forEach((a) => lanes.set(laneOf(a), [...(lanes.get(laneOf(a)) ?? []), a]));
  // Progress every 10 s, naming any action that has been running for more
  // than 10 s (a lane waits for it: one slow action holds its lane's later ones).
  const running = new Map<Action, number>();
  const slowActions = () =>
    [...running]
      .filter(([, since]) => Date.now() - since > 10_000)
      .map(([a, since]) => `${a.kind} at ${(a.atMs / 1000).toFixed(1)} s running ${((Date.now() - since) / 1000).toFixed(0)} s`);
  let reporting = Promise.resolve();
  const progress = setInterval(() => {
    reporting = reporting.then(async () => {
      const slow = slowActions();
      say(`… ${await statusLine(stack)}${slow.length ? `; waiting on ${slow.join(', ')}` : ''}`);
    });
  }, 10_000);
  await Promise.all(
    [...lanes.values()].map(async (actions) => {
      for (const a of actions) {
        const wait = t0 + a.atMs - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const tally = (records.actions[a.kind] ??= { done: 0, failed: 0 });
        running.set(a, Date.now());
        try {
          await perform(stack, scenario, world, records, a, scenario.actions.indexOf(a));
          tally.done++;
        } catch (err) {
          tally.failed++;
          say(`${a.kind} failed: ${(err as Error).message.slice(0, 300)}`);
        } finally {
          running.delete(a);
        }
      }
    }),
  );
  clearInterval(progress);
  await reporting;

  say('actions done; credits to finish, every campaign resumed; waiting for everything to settle');
  await heal(stack, scenario, world);
  const settled = await settle(stack, scenario.scale.settleTimeoutMs);
  sampling = false;
  await sampler;
  say(settled ? 'settled' : `not settled after ${scenario.scale.settleTimeoutMs / 1000} s: checking what there is`);

  const ev = await gather(stack);
  const paid = await checkPaid(stack, ev, records);
  const checks: CheckReport[] = [
    checkDuplicates(ev, records),
    paid.unpaid,
    paid.negative,
    await checkLedger(stack, ev, world),
    await checkLost(stack, ev, world, records),
    await checkGates(stack, ev, records),
    checkQuietHours(ev, records),
    checkRates(ev, scenario),
  ];
  const { json: simStats } = await call(`${stack.simUrl}/_sim/stats`);
  const { json: deliveries } = await call(`${stack.paymentsUrl}/_sim/deliveries`);
  const faults = faultCount(simStats, deliveries as unknown as { eventId: string; attempt: number }[], stack);

  process.stdout.write('\n── what was done ──\n');
  for (const [kind, t] of Object.entries(records.actions)) process.stdout.write(`  ${kind.padEnd(24)} ${t.done} done${t.failed ? `, ${t.failed} failed` : ''}\n`);
  process.stdout.write(`  workers SIGKILLed and restarted: ${stack.kills}; processes that died on their own (restarted): api ${stack.crashes.api}, workers ${stack.crashes.worker}\n`);
  process.stdout.write('── faults injected ──\n');
  for (const line of faults.lines) process.stdout.write(`  ${line}\n`);
  process.stdout.write('── checks ──\n');
  for (const c of checks) {
    process.stdout.write(`  ${c.count === 0 ? 'ok  ' : 'FAIL'} ${c.name}: ${c.count}\n`);
    for (const line of c.lines) process.stdout.write(`       ${line}\n`);
  }
  const count = (name: string) => checks.find((c) => c.name === name)!.count;
  const names = ['duplicates', 'unpaid', 'negative_balance', 'ledger_mismatches', 'lost', 'gate_violations', 'quiet_hour_violations'];
  process.stdout.write(`\nchaos: seed=${seed} messages=${ev.messages.size} faults=${faults.total} ${names.map((n) => `${n}=${count(n)}`).join(' ')}\n`);
  // rates fail the run too, though the line keeps the counts it was specified with
  return names.every((n) => count(n) === 0) && count('rate_violations') === 0 && settled ? 0 : 1;
}

function laneOf(a: Action): string {
  switch (a.kind) {
    case 'dispute_open':
    case 'dispute_close':
      return 'dispute';
    case 'subscription_cancel':
    case 'subscription_reactivate':
      return 'subscription';
    case 'operator_freeze':
    case 'operator_unfreeze':
      return 'operator_freeze';
    case 'workspace_disable':
    case 'workspace_enable':
      return 'workspace_sms';
    default:
      return a.kind;
  }
}

async function statusLine(stack: ChaosStack): Promise<string> {
  const { rows } = await sql<{ status: string; n: number }>`select status, count(*)::int as n from messages group by 1 order by 1`
    .execute(stack.db)
    .catch(() => ({ rows: [] as { status: string; n: number }[] }));
  return rows.map((r) => `${r.status}=${r.n}`).join(' ') || '(database unavailable)';
}

/** Until every campaign completed, nothing is in flight and the carrier has posted every final status. */
async function settle(stack: ChaosStack, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let last = 0;
  while (Date.now() < deadline) {
    // an open reservation with nothing in flight is a capture reconciliation has yet to make
    // (its worker died after the carrier took the message): settled means none is left
    const done = await sql<{ open: number; campaigns: number }>`select
        (select count(*)::int from messages where status in ('planned', 'queued', 'sending', 'unknown', 'deferred', 'blocked'))
          + (select count(*)::int from credit_reservations where state = 'open') as open,
        (select count(*)::int from campaigns where status not in ('completed', 'cancelled')) as campaigns`
      .execute(stack.db)
      .then((r) => r.rows[0]!)
      .catch(() => undefined);
    if (done !== undefined && done.open === 0 && done.campaigns === 0) {
      const { json } = await call(`${stack.simUrl}/_sim/log`);
      const log = json as unknown as { status: string; finalStatus: string }[];
      if (log.every((e) => e.status === e.finalStatus)) return callbacksLanded(stack, Math.min(60_000, deadline - Date.now()), deadline);
    }
    if (Date.now() - last > 10_000) {
      last = Date.now();
      say(`… ${await statusLine(stack)}${done ? `; campaigns not completed: ${done.campaigns}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 1_000));
  }
  return false;
}

/**
 * The carrier reached every final status; the API may still be working
 * through the callbacks, and reconciliation asks the carrier about the ones
 * it lost. Done when no message is left `sent`; after the timeout the
 * checks show what was never applied.
 *
 * The wait follows reconciliation's own schedule: a `sent` message is
 * asked about again once it has gone untouched for a lease and for half
 * its age (settle.ts), so one whose last look-up came just before the
 * carrier's final status is next asked about at twice that look-up's age.
 * Late in a default run that is minutes away, past a fixed 60 s: the wait
 * lasts until the latest such next look-up has had `LOOKUP_MARGIN_MS` to
 * happen, at least `timeoutMs`, never past `deadline`.
 */
async function callbacksLanded(stack: ChaosStack, timeoutMs: number, deadline: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  const lease = `${FAST_CLOCK.SEND_LEASE_MS} milliseconds`;
  const horizon = `${FAST_CLOCK.RECONCILIATION_HORIZON_MS} milliseconds`;
  while (Date.now() < deadline) {
    // (past the horizon a message is not asked about any more: nothing to wait for)
    const { rows } = await sql<{ n: number; next_ms: number | null }>`select count(*)::int as n,
        (extract(epoch from max(greatest(updated_at + ${lease}::interval, updated_at + (updated_at - coalesce(sent_at, updated_at))))
          filter (where sent_at > now() - ${horizon}::interval) - now()) * 1000)::float8 as next_ms
      from messages where status = 'sent'`.execute(stack.db);
    const { n, next_ms: nextMs } = rows[0]!;
    if (n === 0) return true;
    if (Date.now() >= until && (nextMs === null || nextMs + LOOKUP_MARGIN_MS < 0)) return true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return true;
}

/** How long after its due time a look-up may take to happen (reconciliation runs each second, 200 messages at a time). */
const LOOKUP_MARGIN_MS = 15_000;

function faultCount(stats: Record<string, unknown>, deliveries: { eventId: string; attempt: number }[], stack: ChaosStack) {
  const s = stats as {
    injected: Record<string, number>;
    dropped: number;
    hung: number;
    outageRejected: number;
    callbacks: { duplicated: number; reordered: number; lost: number };
  };
  const injected = Object.values(s.injected).reduce((a, b) => a + b, 0);
  const firstCopies = new Map<string, number>();
  for (const d of deliveries) if (d.attempt === 1) firstCopies.set(d.eventId, (firstCopies.get(d.eventId) ?? 0) + 1);
  const webhookDuplicates = [...firstCopies.values()].reduce((n, k) => n + k - 1, 0);
  const total = injected + s.dropped + s.hung + s.callbacks.duplicated + s.callbacks.reordered + s.callbacks.lost + webhookDuplicates + stack.kills + 1;
  return {
    total,
    lines: [
      `carrier errors injected (outage refusals included): ${injected} (${Object.entries(s.injected).map(([c, n]) => `${c}×${n}`).join(', ')})`,
      `carrier outage: 1 window of 20 s, ${s.outageRejected} sends refused in it`,
      `accepted then connection dropped: ${s.dropped}; hung: ${s.hung}`,
      `status callbacks duplicated: ${s.callbacks.duplicated}, reordered: ${s.callbacks.reordered}, final one never posted: ${s.callbacks.lost}`,
      `Stripe webhooks delivered twice: ${webhookDuplicates} (of ${firstCopies.size} events; deliveries reordered within a window)`,
      `workers SIGKILLed: ${stack.kills}; PostgreSQL restarts: 1`,
    ],
  };
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
