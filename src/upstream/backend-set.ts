import { Selector } from '../selection/selector.js';
import { WeightedRoundRobin } from '../selection/round-robin.js';
import type { Backend } from './backend.js';

/** A ramping backend's share never starts at exactly 0, so round-robin weights stay positive. */
const MIN_RAMP_FRACTION = 0.01;

/**
 * The backends of one config generation, with the selection tables built for exactly that set.
 * Rebuilt when the set (ids or weights) changes, never per request. Health changes only rewrite
 * the usable-flag arrays that selection reads, and slow start the ramp fractions.
 */
export class BackendSet {
  readonly backends: readonly Backend[];
  readonly selector: Selector;
  readonly roundRobin: WeightedRoundRobin;
  /** 1 where a backend may serve clients already pinned to it (up, draining or not, deadline not passed). */
  readonly usableForPinned: Uint8Array;
  /** 1 where a backend may take new clients (up and not draining). */
  readonly usableForNew: Uint8Array;
  /**
   * The share of its weight each backend may take of new clients now: 1, or less while it ramps up
   * after being added or healing (`balance.slowStart`).
   */
  readonly rampFraction: Float64Array;
  /** Whether some backend is still ramping up (its owner refreshes the set until none is). */
  ramping = false;
  private readonly byId: Map<string, Backend>;

  constructor(
    backends: readonly Backend[],
    /** `balance.slowStart` in ms; 0 turns ramps off. */
    private readonly slowStart = 0,
  ) {
    this.backends = backends;
    this.byId = new Map(backends.map((backend) => [backend.id, backend]));
    const weighted = backends.map((backend) => ({ id: backend.id, weight: backend.weight }));
    this.selector = new Selector(weighted);
    this.roundRobin = new WeightedRoundRobin(weighted.map((entry) => entry.weight));
    this.usableForPinned = new Uint8Array(backends.length);
    this.usableForNew = new Uint8Array(backends.length);
    this.rampFraction = new Float64Array(backends.length).fill(1);
    backends.forEach((backend, index) => backend.placeAt(index));
    this.refresh();
  }

  get(id: string): Backend | undefined {
    return this.byId.get(id);
  }

  /** The weight a backend has for new clients now: 0 when it takes none, less than its weight while it ramps. */
  effectiveWeight(backend: Backend): number {
    const index = backend.index;
    if (index < 0 || this.backends[index] !== backend || this.usableForNew[index] === 0) return 0;
    return backend.weight * (this.rampFraction[index] as number);
  }

  /** Recomputes the usable flags and ramps from each backend's state; the registry calls it on every change. */
  refresh(now = Date.now()): void {
    let ramping = false;
    for (let i = 0; i < this.backends.length; i++) {
      const backend = this.backends[i] as Backend;
      this.usableForPinned[i] = backend.servesPinned ? 1 : 0;
      this.usableForNew[i] = backend.takesNewClients ? 1 : 0;
      const since = backend.inServiceSince;
      let fraction = 1;
      if (this.slowStart > 0 && since !== null && now - since < this.slowStart) {
        fraction = Math.max(MIN_RAMP_FRACTION, (now - since) / this.slowStart);
        ramping = true;
      }
      if (fraction !== this.rampFraction[i]) {
        this.rampFraction[i] = fraction;
        this.roundRobin.setWeight(i, backend.weight * fraction);
      }
    }
    this.ramping = ramping;
  }
}
