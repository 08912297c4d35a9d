import type { LocalResourceError } from '../errors.js';
import type { Backend, BackendChange } from '../upstream/backend.js';
import type { Logger } from './log.js';

/** One log line per backend transition, at the level an operator wants to see it. */
export function logBackendChange(logger: Logger, backend: Backend, change: BackendChange, maxFails: number): void {
  switch (change) {
    case 'up':
    case 'down':
      logger.warn({ msg: `backend ${change}`, backend: backend.id, lastCheck: backend.lastCheck });
      return;
    case 'readmitted':
      logger.warn({ msg: 'backend up', backend: backend.id, lastCheck: backend.lastCheck, readmitted: true });
      return;
    case 'ejected':
      logger.warn({ msg: 'backend ejected', backend: backend.id, reason: backend.lastError, failures: maxFails });
      return;
    case 'draining':
    case 'undrained':
      logger.info({ msg: change === 'draining' ? 'backend draining' : 'backend undrained', backend: backend.id });
      return;
    case 'retired':
      logger.info({ msg: 'backend removed', backend: backend.id });
      return;
    case 'verified':
    case 'adopted':
      return;
  }
}

/** How often, at most, limpet says it is out of descriptors or ports: once in a flood, not per request. */
const LOCAL_LIMIT_LOG_EVERY_MS = 5_000;

/**
 * Says that limpet itself is out of something (descriptors, local ports): the first time at once,
 * then at most every few seconds with how many requests it cost meanwhile.
 */
export class LocalLimitLog {
  private lastAt = 0;
  private since = 0;

  constructor(private readonly logger: Logger) {}

  seen(failure: LocalResourceError): void {
    this.since++;
    const now = Date.now();
    if (now - this.lastAt < LOCAL_LIMIT_LOG_EVERY_MS) return;
    this.logger.error({ msg: 'limpet is out of a resource of its own: requests answered 503, no backend blamed', cause: failure.message, requests: this.since });
    this.lastAt = now;
    this.since = 0;
  }
}
