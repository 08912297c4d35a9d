import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { LimpetConfig } from '../config/schema.js';
import type { Logger } from '../observe/log.js';
import type { DurableState, StateSink } from './durable-state.js';
import { decodeState, encodeState, fileDrainOf, StateFileCorruptError, StateFileVersionError, type KeptState } from './state-file-format.js';

/** A change waits this long for the ones that come with it (a burst of new clients, a drain and its moves). */
const SETTLE_MS = 100;
/** Under a steady stream of pin changes the file is written at most this often: each write is the whole table. */
const PIN_BATCH_MS = 1_000;
/** While writes fail, the next try waits this long. */
const RETRY_MS = 2_000;

/** What a state file is kept from and restored into: the running proxy (`Limpet`). */
export interface StatefulProxy {
  readonly currentConfig: LimpetConfig;
  durableState(): DurableState;
  restoreState(state: DurableState): number;
  addStateSink(sink: StateSink): void;
}

/**
 * Keeps a proxy's pins and runtime drains in `file` (the `stateFile` key): what the file holds is
 * restored first, then every change is written. Called at start, before the proxy serves, by the
 * process whose state counts (standalone, or a cluster primary). A missing, unreadable or corrupt
 * file is logged and ignored: the proxy starts empty, as it would without the key.
 */
export async function keepStateInFile(file: string, proxy: StatefulProxy, logger: Logger): Promise<StateFile> {
  const kept = await readStateFile(file, logger);
  if (kept !== null) restoreKept(file, kept, proxy, logger);
  const sink = new StateFile(file, proxy, logger);
  proxy.addStateSink(sink);
  return sink;
}

/** The state `file` holds, or null (logged) when there is none that can be used. */
export async function readStateFile(file: string, logger: Logger): Promise<KeptState | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    if (code === 'ENOENT') logger.info({ msg: 'no state file yet; starting with no kept pins or drains', file });
    else logger.warn({ msg: 'state file ignored: it cannot be read', file, reason: message });
    return null;
  }
  try {
    return decodeState(text);
  } catch (error) {
    if (error instanceof StateFileVersionError) logger.warn({ msg: 'state file ignored: written in another format version', file, reason: error.message });
    else if (error instanceof StateFileCorruptError) logger.warn({ msg: 'state file ignored: it is corrupt', file, reason: error.message });
    // Never fatal: whatever else went wrong reading it, the proxy starts as it would without one.
    else logger.warn({ msg: 'state file ignored: it cannot be read', file, reason: String(error) });
    return null;
  }
}

/**
 * Hands kept state to the proxy. A runtime drain stays only while the config file gives its backend
 * the drain it gave when the drain was made: a file edited while limpet was stopped rules again, as
 * it would on a live reload. Pins of another affinity mode are keys of another kind, left out.
 */
function restoreKept(file: string, kept: KeptState, proxy: StatefulProxy, logger: Logger): void {
  const config = proxy.currentConfig;
  const drains = kept.drains.filter(({ id, fileDrain }) => {
    const now = fileDrainOf(config, id);
    return now.draining === fileDrain.draining && now.deadline === fileDrain.deadline;
  });
  const sameKeys = kept.affinity === config.affinity.by;
  const pins = proxy.restoreState({ pins: sameKeys ? kept.pins : [], drains: drains.map(({ fileDrain: _, ...drain }) => drain) });
  logger.info({
    msg: 'state restored',
    file,
    pins,
    // Idle past sessionTtl, pinned to a backend no longer configured, or of another affinity mode.
    pinsLeftOut: kept.pins.length - pins,
    ...(sameKeys ? {} : { affinityChanged: `${kept.affinity} → ${config.affinity.by}` }),
    drains: drains.map(({ id, draining }) => `${id} ${draining ? 'draining' : 'undrained'}`),
    // The config file changed these backends' drain (or no longer has them) while limpet was stopped.
    drainsLeftOut: kept.drains.filter((drain) => !drains.includes(drain)).map(({ id }) => id),
  });
}

/**
 * The state file as a sink: every change marks it stale, and the whole state is written atomically
 * (temp file in the same folder, fsync, rename; mode 0600, as pins are client addresses or session
 * header values) in batches: a runtime drain within about SETTLE_MS, pins within about a second and
 * at most once a second, and whatever is pending at close. A write that fails is retried, logged
 * once per outage and once when writes work again; nothing of it reaches a request.
 */
export class StateFile implements StateSink {
  /** Something changed since the last write began. */
  private stale = false;
  /** A runtime drain changed: not worth waiting a whole batch for. */
  private drainStale = false;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = 0;
  private writing: Promise<void> | null = null;
  private lastWriteAt = 0;
  private failingSince: number | null = null;
  private closed = false;

  constructor(
    readonly file: string,
    private readonly source: Pick<StatefulProxy, 'currentConfig' | 'durableState'>,
    private readonly logger: Logger,
  ) {}

  pinWritten(): void {
    // Called per new or refreshed pin: once a write is pending, nothing more to do.
    if (this.stale && (this.timer !== null || this.writing !== null)) return;
    this.stale = true;
    this.schedule();
  }

  drainChanged(): void {
    this.stale = this.drainStale = true;
    this.schedule();
  }

  drainForgotten(): void {
    this.drainChanged();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.writing;
    if (this.stale) await this.write();
  }

  /** Writes the whole state now (one write at a time); resolves when it is on disk or has failed (logged). */
  write(): Promise<void> {
    if (this.writing !== null) return this.writing;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.writing = this.writeOnce().finally(() => {
      this.writing = null;
      if (this.stale) this.schedule();
    });
    return this.writing;
  }

  private schedule(): void {
    if (this.closed || this.writing !== null) return; // a running write reschedules when it ends
    const gap = this.failingSince !== null ? RETRY_MS : this.drainStale ? 0 : PIN_BATCH_MS;
    const at = Math.max(Date.now() + SETTLE_MS, this.lastWriteAt + gap);
    if (this.timer !== null) {
      if (this.timerAt <= at) return;
      clearTimeout(this.timer);
    }
    this.timerAt = at;
    this.timer = setTimeout(() => void this.write(), at - Date.now());
    this.timer.unref();
  }

  private async writeOnce(): Promise<void> {
    this.stale = this.drainStale = false;
    this.lastWriteAt = Date.now();
    try {
      await writeAtomically(this.file, encodeState(this.source.durableState(), this.source.currentConfig));
    } catch (error) {
      this.stale = true;
      if (this.failingSince === null) {
        this.failingSince = Date.now();
        this.logger.warn({ msg: 'state file cannot be written; retrying, pins and drains are kept in memory meanwhile', file: this.file, reason: (error as Error).message });
      }
      return;
    }
    if (this.failingSince !== null) {
      this.logger.info({ msg: 'state file written again', file: this.file, failedForMs: Date.now() - this.failingSince });
      this.failingSince = null;
    }
  }
}

/**
 * Replaces `file` with `chunks` so that a crash at any moment leaves the old file or the new one,
 * never a mix: a temp file beside it (same filesystem, so the rename is atomic), flushed to disk
 * before the rename.
 */
async function writeAtomically(file: string, chunks: Iterable<string>): Promise<void> {
  const temp = `${file}.tmp`;
  // Created afresh and exclusively: a temp file left by a crash goes first, and whatever stands at
  // the temp path by then (a symlink planted in a shared folder) fails the write instead of being
  // followed. Mode 0600 from the start: pins are client addresses and session header values.
  await rm(temp, { force: true });
  const handle = await open(temp, 'wx', 0o600);
  try {
    for (const chunk of chunks) await handle.write(chunk);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temp, { force: true }).catch(() => {});
    throw error;
  }
  await handle.close();
  await rename(temp, file);
  await syncFolder(dirname(file));
}

/** Makes the rename itself survive a power cut; a filesystem that cannot sync a folder still has the file. */
async function syncFolder(folder: string): Promise<void> {
  try {
    const handle = await open(folder, 'r');
    await handle.sync().finally(() => handle.close());
  } catch {
    // The rename is done; only its durability across a power cut is in question.
  }
}
