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
