import { sql } from 'kysely';
import type { Db } from '../../src/db/db.ts';
import { newId } from '../../src/shared/ids.ts';

/** An organization row for tests that work below the HTTP layer. */
export async function insertOrg(db: Db, name = 'Test org'): Promise<string> {
  const id = newId('org');
  await db.insertInto('organizations').values({ id, name }).execute();
  return id;
}

export interface StoredAccount {
  allowance: number;
  purchased: number;
  reservedAllowance: number;
  reservedPurchased: number;
  spent: number;
  debt: number;
}

export async function storedAccount(db: Db, organizationId: string): Promise<StoredAccount> {
  const { rows } = await sql<StoredAccount>`select allowance_available as allowance, purchased_available as purchased,
      reserved_allowance as "reservedAllowance", reserved_purchased as "reservedPurchased", spent, debt
    from credit_accounts where organization_id = ${organizationId}`.execute(db);
  return rows[0] ?? { allowance: 0, purchased: 0, reservedAllowance: 0, reservedPurchased: 0, spent: 0, debt: 0 };
}
