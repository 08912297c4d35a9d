/**
 * Places new clients in exact weight proportion: nginx's smooth weighted round-robin, which over
 * any run of `sum(weights)` picks (integer weights, same usable set) gives each backend exactly its
 * weight, interleaved rather than in bursts. Hashing cannot promise that for a small number of
 * clients; this can, which is why new cookie clients are placed here rather than by their nonce.
 */
export class WeightedRoundRobin {
  private readonly weights: Float64Array;
  private readonly current: Float64Array;

  constructor(weights: readonly number[]) {
    for (const weight of weights) {
      if (!Number.isFinite(weight) || weight <= 0) throw new RangeError(`weight must be a finite number > 0, got ${weight}`);
    }
    this.weights = Float64Array.from(weights);
    this.current = new Float64Array(weights.length);
  }

  /** Changes one backend's weight from the next pick on (slow start ramps it). */
  setWeight(index: number, weight: number): void {
    if (!Number.isFinite(weight) || weight <= 0) throw new RangeError(`weight must be a finite number > 0, got ${weight}`);
    this.weights[index] = weight;
  }

  /** Index of the next backend among those with `usable[i]` set, or -1 if none is usable. */
  next(usable: ArrayLike<number>): number {
    const { weights, current } = this;
    let best = -1;
    let total = 0;
    for (let i = 0; i < weights.length; i++) {
      if (!usable[i]) continue;
      const weight = weights[i] as number;
      current[i] = (current[i] as number) + weight;
      total += weight;
      if (best < 0 || (current[i] as number) > (current[best] as number)) best = i;
    }
    if (best >= 0) current[best] = (current[best] as number) - total;
    return best;
  }
}
