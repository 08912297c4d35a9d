import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { ConfigError, formatConfigIssues, parseConfig, readConfigText, type LimpetConfig } from './load.js';
import type { Logger } from '../observe/log.js';

/** Quiet time after the last file event before reading: editors write in several steps. */
const DEBOUNCE_MS = 200;

export interface ReloadTarget {
  reload(config: LimpetConfig): string[];
}

export interface ReloadCounter {
  inc(labels: { result: 'success' | 'failure' }): void;
}

/**
 * Watches the config file and applies it when it changes, or on demand (SIGHUP). The directory is
 * watched, not the file, so write-then-rename saves, `sed -i` and Kubernetes ConfigMap symlink swaps
 * are all seen; a content hash skips events that changed nothing. An invalid file is rejected whole
 * and the running config stays.
 */
export class ConfigReloader {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastDigest: string | null = null;
  private running: Promise<boolean> | null = null;
  private readonly file: string;

  constructor(
    file: string,
    private readonly target: ReloadTarget,
    private readonly logger: Logger,
    private readonly reloads: ReloadCounter,
  ) {
    this.file = resolve(file);
  }

  /** Starts watching; `initialText` is the text the proxy started with, so an unchanged file is not re-applied. */
  start(initialText: string): void {
    this.lastDigest = digest(initialText);
    const name = basename(this.file);
    this.watcher = watch(dirname(this.file), { persistent: false }, (_event, changed) => {
      // Symlink swaps (ConfigMaps) rename a sibling, so any event in the folder may matter.
      if (changed === null || changed === name || String(changed).startsWith('..')) this.schedule();
    });
    this.watcher.on('error', (error) => this.logger.error({ msg: 'config watch failed; SIGHUP still reloads', error: error.message }));
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer !== null) clearTimeout(this.timer);
  }

  /** Reads, validates and applies the file now. Resolves true when a new config was applied. */
  reload(reason: 'file' | 'signal'): Promise<boolean> {
    // One reload at a time; a request while one runs is served by running again after it.
    const run = (this.running ?? Promise.resolve(false)).then(() => this.apply(reason));
    this.running = run.finally(() => {
      if (this.running === run) this.running = null;
    });
    return run;
  }

  private schedule(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.reload('file');
    }, DEBOUNCE_MS);
    this.timer.unref();
  }

  private async apply(reason: 'file' | 'signal'): Promise<boolean> {
    let text: string;
    try {
      text = await readConfigText(this.file);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      // Mid-rename the file may be briefly absent; the rename's own event brings us back.
      if (reason === 'file' && error.fileMissing) return false;
      return this.reject(formatConfigIssues(error.issues).split('\n'));
    }
    const textDigest = digest(text);
    if (reason === 'file' && textDigest === this.lastDigest) return false;
    let config: LimpetConfig;
    try {
      config = parseConfig(text, this.file);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      this.lastDigest = textDigest;
      return this.reject(formatConfigIssues(error.issues).split('\n'));
    }
    this.lastDigest = textDigest;
    const needsRestart = this.target.reload(config);
    this.reloads.inc({ result: 'success' });
    this.logger.info({ msg: 'config reloaded', reason, file: this.file, backends: config.backends.map((b) => b.id) });
    if (needsRestart.length > 0) {
      this.logger.warn({ msg: 'config changes that need a restart were not applied', keys: needsRestart });
    }
    return true;
  }

  private reject(errors: string[]): false {
    this.reloads.inc({ result: 'failure' });
    this.logger.error({ msg: 'config reload rejected; the previous config keeps serving', file: this.file, errors });
    return false;
  }
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
