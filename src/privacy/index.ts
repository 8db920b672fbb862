export { type ErasureReport, erasePhone, exportPhone, type PhoneExport } from './privacy.ts';
