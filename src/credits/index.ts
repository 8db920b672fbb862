export {
  available,
  type Balances,
  ENTRY_KINDS,
  type EntryKind,
} from './credits.ts';
export {
  type AdjustResult,
  adjust,
  type BalancesView,
  capture,
  clawback,
  type CreditResult,
  grant,
  inTransaction,
  type LedgerActor,
  purchase,
  type Replayable,
  type ReservedItem,
  type ReserveItem,
  type ReserveResult,
  refund,
  release,
  renewAllowance,
  reserve,
  type SettleResult,
} from './ledger.ts';
export {
  type AlertView,
  type CreditsView,
  entryRowToView,
  getCredits,
  type LedgerEntryView,
  type LedgerFilter,
  listAlerts,
  listEntries,
  setLowBalanceThreshold,
} from './queries.ts';
export { latestVerification, type Mismatch, recordVerification, type VerifyReport, verifyLedger } from './verify.ts';
