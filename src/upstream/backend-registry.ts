import { Backend, type BackendChange, type BackendSettings, type DrainSetting, type PoolSettings } from './backend.js';
import { BackendSet } from './backend-set.js';

/** Told of every backend change: `added` when a backend is created, then each of its transitions. */
export type RegistryListener = (backend: Backend, change: BackendChange | 'added') => void;

/**
 * Owns the backends of a running proxy: creates them, reuses them by id across reloads (so health,
 * counters and pins survive), retires the ones a reload removes, and holds the current BackendSet.
 * Every backend reports its changes here; the registry refreshes the set's selection flags first,
 * then tells its listeners (tunnels, logs, the cluster), so they all see selection already updated.
 */
export class BackendRegistry {
  private readonly byId = new Map<string, Backend>();
  private current: BackendSet;
  private readonly listeners: RegistryListener[] = [];
  /** Refreshes the set's ramps while some backend ramps up (slow start); null when none does. */
  private rampTimer: NodeJS.Timeout | null = null;

  /** `slowStart`: how long a backend that is added or heals ramps up (ms); 0 for no ramp. */
  constructor(
    entries: readonly BackendSettings[],
    pool: PoolSettings,
    private slowStart = 0,
  ) {
    this.current = new BackendSet(
      entries.map((entry) => this.create(entry, pool, false)),
      slowStart,
    );
  }

  /** The backends of the current config generation and their selection tables. */
  get set(): BackendSet {
    return this.current;
  }

  get backends(): readonly Backend[] {
    return this.current.backends;
  }

  get(id: string): Backend | undefined {
    return this.byId.get(id);
  }

  /** Listens to every change from now on; also told of the backends that exist already, as `added`. */
  listen(listener: RegistryListener): void {
    this.listeners.push(listener);
    for (const backend of this.current.backends) listener(backend, 'added');
  }

  /**
   * Makes `entries` the backends: kept ids are reconfigured, new ones wait for their first check,
   * missing ones retire (their pools close once their requests are done). `drain` holds the drains
   * the reload plan decided for kept backends; a deadline counts from when the drain began.
   */
  apply(entries: readonly BackendSettings[], pool: PoolSettings, drain: ReadonlyMap<string, DrainSetting>, slowStart = this.slowStart): void {
    this.slowStart = slowStart;
    const backends = entries.map((entry) => {
      const existing = this.byId.get(entry.id);
      if (existing === undefined) return this.create(entry, pool, true);
      existing.reconfigure(entry, pool);
      return existing;
    });
    const previous = this.current;
    this.current = new BackendSet(backends, slowStart);
    this.watchRamps();
    for (const backend of previous.backends) {
      if (this.current.get(backend.id) === backend) continue;
      this.byId.delete(backend.id);
      void backend.retire();
    }
    const now = Date.now();
    for (const [id, { draining, deadline }] of drain) {
      const backend = this.byId.get(id);
      if (backend === undefined) continue;
      const since = backend.drainStarted ?? now;
      backend.setDraining(draining, deadline === null ? null : since + deadline, now);
    }
  }

  /** Closes every backend's connections once their requests are done. */
  async close(): Promise<void> {
    if (this.rampTimer !== null) clearInterval(this.rampTimer);
    this.rampTimer = null;
    await Promise.all([...this.byId.values()].map((backend) => backend.close()));
  }

  private create(entry: BackendSettings, pool: PoolSettings, pending: boolean): Backend {
    const backend = new Backend(entry, pool, this.changed, pending);
    this.byId.set(entry.id, backend);
    for (const listener of this.listeners) listener(backend, 'added');
    return backend;
  }

  /** Keeps refreshing the ramps while one runs: a few dozen steps over the slow start, at most one a second. */
  private watchRamps(): void {
    if (!this.current.ramping || this.rampTimer !== null) return;
    const step = Math.min(1_000, Math.max(100, Math.floor(this.slowStart / 50)));
    this.rampTimer = setInterval(() => {
      this.current.refresh();
      if (this.current.ramping || this.rampTimer === null) return;
      clearInterval(this.rampTimer);
      this.rampTimer = null;
    }, step);
    this.rampTimer.unref();
  }

  private readonly changed = (backend: Backend, change: BackendChange): void => {
    this.current.refresh();
    this.watchRamps();
    for (const listener of this.listeners) listener(backend, change);
  };
}
