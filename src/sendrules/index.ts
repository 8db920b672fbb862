export {
  applyFrequencyCaps,
  applyHourlyCap,
  type CapPurpose,
  DEFAULT_FREQUENCY_CAPS,
  DEFAULT_HOURLY_CAP,
  effectiveFrequencyCaps,
  type FrequencyCap,
  HOURLY_CAPPED,
} from './caps.ts';
export { allowedCountries, checkNumber, countryAllowed, type NumberCheck, type NumberRefusal } from './numberSafety.ts';
export {
  DEFAULT_WINDOWS,
  formatWindow,
  isAllowedAt,
  nextAllowedInstant,
  parseWindow,
  type Purpose,
  type SendPolicy,
  sendPolicy,
  type Window,
} from './quietHours.ts';
export { readRules, updateRules } from './rules.store.ts';
export { effectiveRules, RULE_PURPOSES, type SendingRules, type SendingRulesPatch, validateRulesPatch } from './settings.ts';
export { primaryZone, recipientZones, zonesForNumber } from './timezones.ts';
