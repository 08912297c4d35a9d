import { Selector } from '../selection/selector.js';
import { WeightedRoundRobin } from '../selection/round-robin.js';
import type { Backend } from './backend.js';

/**
 * The backends of one config generation, with the selection tables built for exactly that set.
 * Rebuilt when the set (ids or weights) changes, never per request. Health changes only rewrite
 * the two usable-flag arrays that selection reads.
 */
export class BackendSet {
  readonly backends: readonly Backend[];
  readonly selector: Selector;
  readonly roundRobin: WeightedRoundRobin;
  /** 1 where a backend may serve clients already pinned to it (up, draining or not). */
  readonly usableForPinned: Uint8Array;
  /** 1 where a backend may take new clients (up and not draining). */
  readonly usableForNew: Uint8Array;
  private readonly byId: Map<string, Backend>;

  constructor(backends: readonly Backend[]) {
    this.backends = backends;
    this.byId = new Map(backends.map((backend) => [backend.id, backend]));
    const weighted = backends.map((backend) => ({ id: backend.id, weight: backend.weight }));
    this.selector = new Selector(weighted);
    this.roundRobin = new WeightedRoundRobin(weighted.map((entry) => entry.weight));
    this.usableForPinned = new Uint8Array(backends.length);
    this.usableForNew = new Uint8Array(backends.length);
    backends.forEach((backend, index) => backend.placeAt(index));
    this.refresh();
  }

  get(id: string): Backend | undefined {
    return this.byId.get(id);
  }

  /** Recomputes the usable flags from each backend's state; the registry calls it on every change. */
  refresh(): void {
    for (let i = 0; i < this.backends.length; i++) {
      const backend = this.backends[i] as Backend;
      this.usableForPinned[i] = backend.available ? 1 : 0;
      this.usableForNew[i] = backend.takesNewClients ? 1 : 0;
    }
  }
}
