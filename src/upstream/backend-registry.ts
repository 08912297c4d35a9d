import { Backend, type BackendChange, type BackendSettings, type PoolSettings } from './backend.js';
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

  constructor(entries: readonly BackendSettings[], pool: PoolSettings) {
    this.current = new BackendSet(entries.map((entry) => this.create(entry, pool, false)));
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
   * missing ones retire (their pools close once their requests are done). `drain` holds the drain
   * flags the reload plan decided for kept backends.
   */
  apply(entries: readonly BackendSettings[], pool: PoolSettings, drain: ReadonlyMap<string, boolean>): void {
    const backends = entries.map((entry) => {
      const existing = this.byId.get(entry.id);
      if (existing === undefined) return this.create(entry, pool, true);
      existing.reconfigure(entry, pool);
      return existing;
    });
    const previous = this.current;
    this.current = new BackendSet(backends);
    for (const backend of previous.backends) {
      if (this.current.get(backend.id) === backend) continue;
      this.byId.delete(backend.id);
      void backend.retire();
    }
    for (const [id, draining] of drain) this.byId.get(id)?.setDraining(draining);
  }

  /** Closes every backend's connections once their requests are done. */
  async close(): Promise<void> {
    await Promise.all([...this.byId.values()].map((backend) => backend.close()));
  }

  private create(entry: BackendSettings, pool: PoolSettings, pending: boolean): Backend {
    const backend = new Backend(entry, pool, this.changed, pending);
    this.byId.set(entry.id, backend);
    for (const listener of this.listeners) listener(backend, 'added');
    return backend;
  }

  private readonly changed = (backend: Backend, change: BackendChange): void => {
    this.current.refresh();
    for (const listener of this.listeners) listener(backend, change);
  };
}
