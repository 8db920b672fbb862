/** The carriers capability: the Carrier port, the Twilio adapter, and the carrier simulator. */
export type { Carrier, CarrierMessage, SendOutcome, SendRequest } from './carrier.ts';
export {
  classifySendError,
  classifyTransportFailure,
  createTwilioCarrier,
  createTwilioClient,
  type TwilioCarrierOptions,
} from './twilio.ts';
export { twilioSignature } from './signature.ts';
export {
  startCarrierSimulator,
  parseFaultProfile,
  type CarrierSimulator,
  type CarrierSimulatorOptions,
  type FaultProfile,
  type InboundSms,
  type SimAccount,
  type SimMessage,
  type SimStats,
} from './simulator/index.ts';
