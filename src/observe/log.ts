import { pino, type Logger } from 'pino';

export type { Logger };
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** How often, at most, a line about a flood of events is written: once in a flood, not per event. */
const THROTTLE_MS = 5_000;

/**
 * A log line for an event that can come in floods: written the first time at once, then at most
 * every few seconds, with how many times the event happened since the last line.
 */
export class ThrottledLog<T> {
  private lastAt = 0;
  private since = 0;

  constructor(private readonly write: (event: T, count: number) => void) {}

  seen(event: T): void {
    this.since++;
    const now = Date.now();
    if (now - this.lastAt < THROTTLE_MS) return;
    this.write(event, this.since);
    this.lastAt = now;
    this.since = 0;
  }
}

/**
 * Structured JSON-lines logger: one line per event, ISO time, textual level.
 * Request-path code never logs unless the access log is switched on.
 */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination ? pino(options, destination) : pino(options);
}
