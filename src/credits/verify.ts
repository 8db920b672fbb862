import { sql } from 'kysely';
import type { DbOrTx } from '../db/db.ts';

/**
 * `credence ledger verify`: recompute every account from its entries (and
 * its open reservations) and compare with the stored balances (G4).
 */
export interface Mismatch {
  organization_id: string;
  field: string;
  stored: number;
  computed: number;
}

export interface VerifyReport {
  accounts_checked: number;
  mismatches: Mismatch[];
}

interface Row {
  organization_id: string;
  allowance_available: number | null;
  purchased_available: number | null;
  reserved_allowance: number | null;
  reserved_purchased: number | null;
  spent: number | null;
  debt: number | null;
  e_allowance: number;
  e_purchased: number;
  e_reserved_allowance: number;
  e_reserved_purchased: number;
  e_spent: number;
  e_debt: number;
  r_allowance: number;
  r_purchased: number;
}

export async function verifyLedger(db: DbOrTx): Promise<VerifyReport> {
  // One consistent snapshot: a repeatable-read transaction sees accounts,
  // entries and reservations as of the same instant, even while money moves.
  const run = async (trx: DbOrTx) => {
    const { rows } = await sql<Row>`
      with e as (
        select organization_id,
          sum(allowance_delta)::bigint as e_allowance, sum(purchased_delta)::bigint as e_purchased,
          sum(reserved_allowance_delta)::bigint as e_reserved_allowance,
          sum(reserved_purchased_delta)::bigint as e_reserved_purchased,
          sum(spent_delta)::bigint as e_spent, sum(debt_delta)::bigint as e_debt
        from ledger_entries group by organization_id
      ), r as (
        select organization_id, sum(from_allowance)::bigint as r_allowance, sum(from_purchased)::bigint as r_purchased
        from credit_reservations where state = 'open' group by organization_id
      )
      select coalesce(a.organization_id, e.organization_id) as organization_id,
        a.allowance_available, a.purchased_available, a.reserved_allowance, a.reserved_purchased, a.spent, a.debt,
        coalesce(e.e_allowance, 0)::bigint as e_allowance, coalesce(e.e_purchased, 0)::bigint as e_purchased,
        coalesce(e.e_reserved_allowance, 0)::bigint as e_reserved_allowance,
        coalesce(e.e_reserved_purchased, 0)::bigint as e_reserved_purchased,
        coalesce(e.e_spent, 0)::bigint as e_spent, coalesce(e.e_debt, 0)::bigint as e_debt,
        coalesce(r.r_allowance, 0)::bigint as r_allowance, coalesce(r.r_purchased, 0)::bigint as r_purchased
      from credit_accounts a
      full outer join e on e.organization_id = a.organization_id
      left join r on r.organization_id = coalesce(a.organization_id, e.organization_id)
      order by 1`.execute(trx);
    const mismatches: Mismatch[] = [];
    for (const row of rows) {
      const check = (field: string, stored: number | null, computed: number) => {
        if ((stored ?? 0) !== computed || (stored === null && computed !== 0)) {
          mismatches.push({ organization_id: row.organization_id, field, stored: stored ?? 0, computed });
        }
      };
      check('allowance_available', row.allowance_available, row.e_allowance);
      check('purchased_available', row.purchased_available, row.e_purchased);
      check('reserved_allowance', row.reserved_allowance, row.e_reserved_allowance);
      check('reserved_purchased', row.reserved_purchased, row.e_reserved_purchased);
      check('spent', row.spent, row.e_spent);
      check('debt', row.debt, row.e_debt);
      check('reserved_allowance (open reservations)', row.reserved_allowance, row.r_allowance);
      check('reserved_purchased (open reservations)', row.reserved_purchased, row.r_purchased);
    }
    return { accounts_checked: rows.length, mismatches };
  };
  if (db.isTransaction) return run(db);
  return db.transaction().setIsolationLevel('repeatable read').execute(run);
}

export async function recordVerification(db: DbOrTx, report: VerifyReport): Promise<void> {
  await sql`insert into ledger_verifications (accounts_checked, mismatches, details)
    values (${report.accounts_checked}, ${report.mismatches.length}, ${JSON.stringify(report.mismatches.slice(0, 1000))}::jsonb)`.execute(
    db,
  );
}

export async function latestVerification(
  db: DbOrTx,
): Promise<{ mismatches: number; accounts_checked: number; created_at: Date } | undefined> {
  const { rows } = await sql<{ mismatches: number; accounts_checked: number; created_at: Date }>`
    select mismatches, accounts_checked, created_at from ledger_verifications order by id desc limit 1`.execute(db);
  return rows[0];
}
