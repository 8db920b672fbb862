import pino, { type DestinationStream, type Logger as PinoLogger } from 'pino';
import type { LogLevel } from '../config.ts';

export type Logger = PinoLogger;

/** Structured JSON logs; every line carries the ids it concerns as fields. */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'credence', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['req.headers.authorization', '*.password', '*.key'], remove: false },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
