import type { LocalResourceError } from '../errors.js';
import type { Backend, BackendChange } from '../upstream/backend.js';
import { ThrottledLog, type Logger } from './log.js';

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

/**
 * Says that limpet itself is out of something (descriptors, local ports): the first time at once,
 * then at most every few seconds with how many requests it cost meanwhile.
 */
export class LocalLimitLog extends ThrottledLog<LocalResourceError> {
  constructor(logger: Logger) {
    super((failure, requests) =>
      logger.error({ msg: 'limpet is out of a resource of its own: requests answered 503, no backend blamed', cause: failure.message, requests }),
    );
  }
}

/** Says that HTTP/2 connections were closed for a reset flood: the first at once, then at most every few seconds with how many. */
export class ResetFloodLog extends ThrottledLog<string> {
  constructor(logger: Logger) {
    super((client, connections) => logger.warn({ msg: 'HTTP/2 connection closed: too many streams reset (rapid reset)', client, connections }));
  }
}
