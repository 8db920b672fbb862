export { type NumberType, type ParsedPhone, parsePhone } from '../shared/phone.ts';
