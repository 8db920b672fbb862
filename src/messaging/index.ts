export { type Admission, type AdmissionOptions, countApiBacklog, createAdmission } from './admission.ts';
export { type BreakerState, CLOSED as BREAKER_CLOSED } from './breaker.ts';
export { CARRIER_ERRORS, classifyCarrierError, type ErrorClass } from './carrierErrors.ts';
export { type Dispatcher, notifyDispatch, startDispatcher } from './dispatcher.ts';
export { type Capturer, drainCaptures, startCapturer } from './captures.ts';
export { DISPATCH_BATCH, type DispatchReport, dispatchOrganization, enqueueSends, lockOrganizationDispatch, SEND_BATCH } from './dispatch.ts';
export {
  type ApiMessageInput,
  characterCount,
  createApiMessage,
  createIntakeBatcher,
  type Intake,
  MAX_BODY,
  PURPOSES,
  type Priced,
  priceMessage,
  pricePhone,
  scheduleDispatch,
  truncateCharacters,
  workspaceCountries,
} from './intake.ts';
export {
  type EventRow,
  findMessage,
  listEvents,
  listMessages,
  type MessageFilter,
  type MessageRow,
  type Producer,
  type Purpose,
} from './messages.store.ts';
export { parsePhone } from './phone.ts';
export { DEFAULT_MULTIPLIERS, FALLBACK_MULTIPLIER, messageCost, type PriceList } from './pricing.ts';
export { countSegments, type Encoding } from './segments.ts';
export { addSenderNumber, listSenderNumbers, type SenderNumber, updateSenderNumber } from './senders.ts';
export { backoffMs } from './retry.ts';
export { drainSenderQueue, type SendDeps, sendBatch, statusCallbackUrl } from './send.ts';
export { createStatusCallbackBatcher, type StatusCallbackBatcher } from './statusBatch.ts';
export { type CallbackResult, handleStatusCallback, RECONCILIATION_HORIZON_MS, reconcile, sweep } from './settle.ts';
export { MESSAGE_STATUSES, type MessageStatus, TERMINAL } from './states.ts';
export { recordApiConsents } from './consentFlow.ts';
export { handleInbound, type InboundResult } from './inbound.ts';
export { applyOptOut } from './optOut.ts';
export { createSystemMessage } from './replies.ts';
export { decide, type SendDecision } from './rules.ts';
export { applyEvent as applyEventTo } from './messages.store.ts';
export { releaseFor } from './reservations.ts';
export { CAMPAIGN_RUNNING, type PauseReason, pauseCampaigns, scheduleCampaignCheck } from './campaignGate.ts';
export { wakeDispatcher } from './dispatcher.ts';
export { insertMessages, type NewMessage } from './messages.store.ts';
export { organizationPriceList } from './intake.ts';
export { resolveSender } from './senders.ts';
