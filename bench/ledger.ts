/**
 * npm run bench:ledger — reserves N one-credit items on a single hot account
 * twice in one run: (a) one transaction per item, (b) batches of 500, each
 * through the real ledger service on a durable PostgreSQL.
 */
import { performance } from 'node:perf_hooks';
import * as credits from '../src/credits/index.ts';
import { newId } from '../src/shared/ids.ts';
import { benchDatabase, rate } from './harness.ts';

const N = Number(process.env.BENCH_LEDGER_ITEMS ?? 100_000);
const BATCH = 500;
const actor = { type: 'system' as const, id: 'bench' };

const { db, close } = await benchDatabase(4);
try {
  const org = newId('org');
  await db.insertInto('organizations').values({ id: org, name: 'bench' }).execute();
  await credits.grant(db, { organizationId: org, amount: 2 * N + 1000, idempotencyKey: 'seed', actor });

  // warm-up (connections, plans) outside the measurement
  for (let i = 0; i < 200; i++) {
    await credits.reserve(db, { organizationId: org, items: [{ messageId: `w${i}`, amount: 1 }], idempotencyKey: `w${i}`, actor });
  }

  let t = performance.now();
  for (let i = 0; i < N; i++) {
    const r = await credits.reserve(db, { organizationId: org, items: [{ messageId: `s${i}`, amount: 1 }], idempotencyKey: `s${i}`, actor });
    if (r.reserved.length !== 1) throw new Error('single reservation did not fit');
  }
  const singleMs = performance.now() - t;
  const single = rate(N, singleMs);
  process.stdout.write(`single: ${N} reservations in ${(singleMs / 1000).toFixed(1)} s = ${single}/s\n`);

  t = performance.now();
  for (let b = 0; b < N / BATCH; b++) {
    const items = Array.from({ length: BATCH }, (_, i) => ({ messageId: `b${b}-${i}`, amount: 1 }));
    const r = await credits.reserve(db, { organizationId: org, items, idempotencyKey: `b${b}`, actor });
    if (r.reserved.length !== BATCH) throw new Error('batch did not fit');
  }
  const batchMs = performance.now() - t;
  const batched = rate(N, batchMs);
  process.stdout.write(`batched: ${N} reservations in ${(batchMs / 1000).toFixed(1)} s = ${batched}/s (batches of ${BATCH})\n`);

  const report = await credits.verifyLedger(db);
  process.stdout.write(`verify: accounts=${report.accounts_checked} mismatches=${report.mismatches.length}\n`);
  process.stdout.write(`ledger: batched=${batched} single=${single} ratio=${(batched / single).toFixed(1)}\n`);
} finally {
  await close();
}
