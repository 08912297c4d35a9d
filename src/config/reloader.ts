import { watch, type FSWatcher, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { ConfigError, configWarningsLog, formatConfigIssues, parseConfigWithWarnings, readConfigText, type ConfigIssue, type LimpetConfig } from './load.js';
import { sourceLabel } from '../discovery/discovered-backend.js';
import type { Logger } from '../observe/log.js';

/** Quiet time after the last file event before reading: editors write in several steps. */
const DEBOUNCE_MS = 200;
/**
 * How often the file is stat'ed as well: some changes raise no event at all (network filesystems,
 * writes through mmap), and a single-file bind mount only tells a watch on the file itself.
 */
const POLL_MS = 2000;

/** stat's codes for a path with no file behind it. */
const MISSING = new Set(['ENOENT', 'ENOTDIR']);

export interface ReloadTarget {
  reload(config: LimpetConfig): string[];
}

export interface ReloadCounter {
  inc(labels: { result: 'success' | 'failure' }): void;
}

/**
 * Watches the config file and applies it when it changes, or on demand (SIGHUP). It listens three
 * ways, because each misses something the others see: the folder (write-then-rename saves, `sed -i`,
 * Kubernetes ConfigMap symlink swaps), the file itself (a single file bind-mounted into a container,
 * written from the host: same inode, but no event in the folder the container sees), and a cheap
 * `stat` every 2 s (size, mtime, inode; network filesystems and anything else that raises no event).
 * A content hash skips events that changed nothing. An invalid file is rejected whole and the
 * running config stays.
 */
export class ConfigReloader {
  private folderWatcher: FSWatcher | null = null;
  private fileWatcher: FSWatcher | null = null;
  /** The inode the file watcher is on: a rename or symlink swap puts a new one behind the path. */
  private watchedInode: number | null = null;
  private poller: NodeJS.Timeout | null = null;
  /** What the last look at the file saw: `dev:ino:size:mtime`, or null when it was missing. */
  private stamp: string | null = null;
  private gone = false;
  private timer: NodeJS.Timeout | null = null;
  private lastDigest: string | null = null;
  private running: Promise<boolean> | null = null;
  private stopped = false;
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
    this.folderWatcher = watch(dirname(this.file), { persistent: false }, (_event, changed) => {
      // Symlink swaps (ConfigMaps) rename a sibling, so any event in the folder may matter.
      if (changed === null || changed === name || String(changed).startsWith('..')) this.schedule();
    });
    this.folderWatcher.on('error', (error) => this.logger.error({ msg: 'config folder watch failed; the file is still polled, and SIGHUP reloads', error: error.message }));
    // Then one read, so a change between the first read and these watches is not lost (an unchanged file costs a hash).
    void this.look().then(() => this.schedule());
    this.poller = setInterval(() => void this.poll(), POLL_MS).unref();
  }

  stop(): void {
    this.stopped = true;
    this.folderWatcher?.close();
    this.folderWatcher = null;
    this.unwatchFile();
    if (this.poller !== null) clearInterval(this.poller);
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

  /** A stat that differs from the last one schedules a reload, as a file event would. */
  private async poll(): Promise<void> {
    const before = this.stamp;
    await this.look();
    if (this.stamp !== before) this.schedule();
  }

  /**
   * Stats the file: says once when it goes and once when it comes back, and keeps the file watch on
   * the inode now behind the path.
   */
  private async look(): Promise<void> {
    let stats: Stats | null = null;
    try {
      stats = await stat(this.file);
    } catch (error) {
      // Not missing but unreadable (permissions): nothing to watch, and a reload says why.
      if (!MISSING.has((error as NodeJS.ErrnoException).code ?? '')) return;
    }
    if (this.stopped) return;
    this.stamp = stats === null ? null : `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}`;
    if (stats === null) {
      this.unwatchFile();
      if (!this.gone) this.logger.warn({ msg: 'config file is gone; the running config stays until it is back', file: this.file });
      this.gone = true;
      return;
    }
    if (this.gone) this.logger.info({ msg: 'config file is back', file: this.file });
    this.gone = false;
    if (stats.ino !== this.watchedInode) this.watchFile(stats.ino);
  }

  private watchFile(inode: number): void {
    this.unwatchFile();
    try {
      const watcher = watch(this.file, { persistent: false }, () => this.schedule());
      // The inode went away (renamed over, deleted): the next look watches its successor.
      watcher.on('error', () => this.unwatchFile());
      this.fileWatcher = watcher;
      this.watchedInode = inode;
    } catch {
      // Gone again between the stat and the watch: the poll notices.
    }
  }

  private unwatchFile(): void {
    this.fileWatcher?.close();
    this.fileWatcher = null;
    this.watchedInode = null;
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.reload('file');
    }, DEBOUNCE_MS);
    this.timer.unref();
  }

  private async apply(reason: 'file' | 'signal'): Promise<boolean> {
    await this.look();
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
    let warnings: ConfigIssue[];
    try {
      ({ config, warnings } = parseConfigWithWarnings(text, this.file));
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      this.lastDigest = textDigest;
      return this.reject(formatConfigIssues(error.issues).split('\n'));
    }
    this.lastDigest = textDigest;
    const needsRestart = this.target.reload(config);
    this.reloads.inc({ result: 'success' });
    this.logger.info({ msg: 'config reloaded', reason, file: this.file, backends: config.backends.map((b) => ('id' in b ? b.id : sourceLabel(b))) });
    if (warnings.length > 0) this.logger.warn(configWarningsLog(this.file, warnings));
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
