export { type AudienceRef, audienceQuery, type SegmentFilter, validateSegmentFilter } from './audience.ts';
export {
  type AttributeValue,
  type Attributes,
  type Contact,
  type ContactFields,
  type ContactRow,
  contactRowToContact,
  mergeAttributes,
  validateContactFields,
  type WorkspaceScope,
} from './contacts.ts';
export {
  type ContactFilter,
  createContact,
  deleteContact,
  getContact,
  listContacts,
  type NewContact,
  updateContact,
} from './contacts.store.ts';
export { CsvScanner, type Column, type ImportField, resolveColumns } from './csv.ts';
export { consentCell, groupByPhone, type ImportRow, readRow, type RowError } from './importRows.ts';
export { abandonContactImport, IMPORT_BATCH_ROWS, runContactImport } from './imports.ts';
export {
  type ContactImport,
  getImport,
  IMPORT_STATUSES,
  type ImportErrorRow,
  type ImportRecord,
  importRecordToImport,
  type ImportStatus,
  listImportErrors,
  listImports,
} from './imports.store.ts';
export {
  addMembers,
  type ContactList,
  createList,
  getList,
  listLists,
  listRowToList,
  MAX_MEMBERS_PER_REQUEST,
  removeMembers,
} from './lists.ts';
export {
  countSegment,
  createSegment,
  getSegment,
  listSegments,
  type Segment,
  segmentContacts,
  segmentRowToSegment,
} from './segments.ts';
export { CHUNK_BYTES, MAX_UPLOAD_BYTES, parseMapping, receiveImport, type UploadOutcome } from './upload.ts';
