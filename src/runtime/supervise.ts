import { ConfigReloader, type ReloadCounter } from '../config/reloader.js';
import type { LimpetConfig } from '../config/schema.js';
import type { Logger } from '../observe/log.js';
import { onStopSignal, shutDown, type StopPlan } from './shutdown.js';

/** What a supervised process does on reload and on stop. */
export interface Supervised {
  /** Applies a validated config; returns the keys that need a restart. */
  reload(config: LimpetConfig): string[];
  /** The stop plan, made when the signal arrives (deadlines come from the config then in force). */
  stopPlan(): StopPlan;
  /** Facts for the "shutting down" line. */
  stopFields(): Record<string, unknown>;
}

/**
 * Runs a process that owns the config file (a single proxy, or a cluster primary): the file is
 * watched and applied on change or SIGHUP, and SIGTERM/SIGINT stop it gracefully.
 */
export function supervise(file: string, text: string, logger: Logger, reloads: ReloadCounter, process_: Supervised): void {
  const reloader = new ConfigReloader(file, { reload: (config) => process_.reload(config) }, logger, reloads);
  reloader.start(text);
  process.on('SIGHUP', () => void reloader.reload('signal'));
  onStopSignal((signal) => {
    reloader.stop();
    void shutDown(process_.stopPlan(), logger, { signal, ...process_.stopFields() });
  });
}
