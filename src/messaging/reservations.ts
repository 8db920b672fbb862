import * as credits from '../credits/index.ts';
import type { Tx } from '../db/db.ts';
import { newId } from '../shared/ids.ts';
import type * as store from './messages.store.ts';

/** Release or capture the reservations of messages, one ledger call per organization. */
export async function releaseFor(trx: Tx, rows: readonly Pick<store.MessageRow, 'organization_id' | 'reservation_id'>[], reason: string) {
  for (const [org, group] of groupBy(rows, (r) => r.organization_id)) {
    const ids = group.map((r) => r.reservation_id).filter((x): x is string => x !== null);
    if (ids.length === 0) continue;
    await credits.release(trx, { organizationId: org, reservationIds: ids, idempotencyKey: `release:${newId('rsv')}`, actor: { type: 'system', id: 'send' }, reason });
  }
}

export async function captureFor(trx: Tx, rows: readonly Pick<store.MessageRow, 'organization_id' | 'reservation_id'>[], reason: string) {
  for (const [org, group] of groupBy(rows, (r) => r.organization_id)) {
    const ids = group.map((r) => r.reservation_id).filter((x): x is string => x !== null);
    if (ids.length === 0) continue;
    await credits.capture(trx, { organizationId: org, reservationIds: ids, idempotencyKey: `capture:${newId('rsv')}`, actor: { type: 'system', id: 'send' }, reason });
  }
}

export function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const map = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = map.get(k);
    if (group === undefined) map.set(k, [item]);
    else group.push(item);
  }
  return map;
}

