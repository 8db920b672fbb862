export {
  CONSENT_PURPOSES,
  CONSENT_SOURCES,
  type ConsentAction,
  type ConsentEvent,
  type ConsentPurpose,
  type ConsentSource,
  type ConsentState,
  consentAllows,
  deriveConsent,
  EXPRESS_CONSENT,
  optInPlan,
} from './consent.ts';
export {
  appendConsentEvents,
  type ConsentEventRow,
  consentHistory,
  eraseConsentEvents,
  type NewConsentEvent,
  revokeErased,
  sqlConsentStates,
} from './consent.store.ts';
export { classifyInbound, type Keyword } from './keywords.ts';
export {
  API_SOURCES,
  type ApiSource,
  type ConsentInput,
  currentConsent,
  type RecordedConsent,
  recordConsents,
  toEvents,
  type ValidConsent,
  validateConsent,
} from './service.ts';
