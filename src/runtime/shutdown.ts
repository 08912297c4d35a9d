import type { Logger } from '../observe/log.js';

/** One graceful stop: what to wait for, how long, and what to cut when the wait is over. */
export interface StopPlan {
  /** Resolves once in-flight work is done and everything is closed. */
  stop(): Promise<void>;
  /** How long `stop` may take (ms). */
  deadline: number;
  /** Cuts what is still open once the deadline passed. */
  atDeadline(): void;
}

/**
 * The shutdown sequence of every kind of process: wait for the plan's stop, cut what remains at
 * the deadline, say so, and exit 0. Logged only when given a reason (the process that received the
 * signal).
 */
export async function shutDown(plan: StopPlan, logger: Logger | null, fields: Record<string, unknown> = {}): Promise<never> {
  if (logger !== null) logger.info({ msg: 'shutting down', ...fields });
  const deadline = setTimeout(() => {
    logger?.warn({ msg: 'shutdown timeout reached; closing what is still open' });
    plan.atDeadline();
  }, plan.deadline);
  deadline.unref();
  await plan.stop();
  clearTimeout(deadline);
  logger?.info({ msg: 'stopped' });
  process.exit(0);
}

/** Runs `stop` once, on the first SIGTERM or SIGINT. */
export function onStopSignal(stop: (signal: NodeJS.Signals) => void): void {
  let stopping = false;
  const handle = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    stop(signal);
  };
  process.once('SIGTERM', handle);
  process.once('SIGINT', handle);
}
