import type { WeightedBackend } from './maglev.js';
import { buildMaglevTable } from './maglev.js';
import type { RendezvousSet } from './rendezvous.js';
import { bestRendezvous, rendezvousOrder, rendezvousSet } from './rendezvous.js';

/**
 * Maps client keys to backends for one backend set. A key's preference order is its Maglev slot's
 * backend first (one table read, slot counts in exact weight proportion), then every other backend
 * in weighted rendezvous order. The pin is the first usable backend in that order, so a backend
 * going down or draining moves only its own keys, spread over the rest by weight. Built once per
 * set and immutable; the same backend list gives the same choices in every process.
 */
export class Selector {
  /** Number of backends; indices run from 0 to `size - 1` in the order given to the constructor. */
  readonly size: number;
  private readonly table: Uint16Array;
  private readonly tableSize: number;
  private readonly rendezvous: RendezvousSet;

  constructor(backends: readonly WeightedBackend[]) {
    this.size = backends.length;
    this.rendezvous = rendezvousSet(backends);
    // An empty set gets a one-slot placeholder; every lookup checks `size` first.
    this.table = this.size === 0 ? new Uint16Array(1) : buildMaglevTable(backends);
    this.tableSize = this.table.length;
  }

  /** First usable backend in the key's preference order, or -1 if none is usable. */
  pick(keyHash: number, usable: ArrayLike<number>): number {
    if (this.size === 0) return -1;
    const first = this.table[keyHash % this.tableSize] as number;
    if (usable[first]) return first;
    return bestRendezvous(this.rendezvous, keyHash, usable, first, -1);
  }

  /**
   * First usable backend in the key's preference order other than `exclude` — for a client whose
   * pinned backend (placed by round-robin, not by this order) is unusable.
   */
  pickExcept(keyHash: number, usable: ArrayLike<number>, exclude: number): number {
    if (this.size === 0) return -1;
    const first = this.table[keyHash % this.tableSize] as number;
    if (first !== exclude && usable[first]) return first;
    return bestRendezvous(this.rendezvous, keyHash, usable, first, exclude);
  }

  /** The key's first choice, ignoring usability; -1 for an empty set. */
  primary(keyHash: number): number {
    if (this.size === 0) return -1;
    return this.table[keyHash % this.tableSize] as number;
  }

  /** The key's full preference order (allocates; for tests and debugging). */
  order(keyHash: number): number[] {
    const first = this.primary(keyHash);
    if (first < 0) return [];
    return [first, ...rendezvousOrder(this.rendezvous, keyHash, first)];
  }
}
