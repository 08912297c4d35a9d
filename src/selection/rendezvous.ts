import { hashSeed, mix32 } from './hash.js';
import type { WeightedBackend } from './maglev.js';
import { effectiveWeights } from './maglev.js';

const SEED_SALT = 0x68727721;
const TWO_POW_32 = 4294967296;

/**
 * Per-backend inputs of weighted rendezvous (highest random weight) hashing: a seed from the
 * backend's id and its weight. A key ranks backends by `-weight / ln(u)`, u uniform in (0, 1) from
 * the key and the seed, which makes each backend first for a share of keys proportional to its
 * weight. Taking a backend away only promotes, for its own keys, whichever backend ranked next.
 */
export interface RendezvousSet {
  readonly seeds: Uint32Array;
  readonly weights: Float64Array;
  /**
   * All weights equal: `-w / ln(u)` rises with u, so ranking by the raw 32-bit draw gives the same
   * order without a logarithm per backend.
   */
  readonly uniform: boolean;
}

export function rendezvousSet(backends: readonly WeightedBackend[]): RendezvousSet {
  const weights = effectiveWeights(backends);
  const seeds = new Uint32Array(backends.length);
  backends.forEach((backend, index) => {
    seeds[index] = hashSeed(backend.id, SEED_SALT);
  });
  const uniform = weights.every((weight) => weight === weights[0]);
  return { seeds, weights, uniform };
}

/** The key's uniform draw for one backend, in [0, 2^32). */
export function rendezvousDraw(keyHash: number, seed: number): number {
  return mix32(keyHash ^ seed);
}

/** The key's weighted score for one backend; higher ranks first. */
export function rendezvousScore(keyHash: number, seed: number, weight: number): number {
  const u = (rendezvousDraw(keyHash, seed) + 0.5) / TWO_POW_32;
  return -weight / Math.log(u);
}

/**
 * Index of the highest-ranked backend with `usable[i]` set, other than `skipA` and `skipB` (pass
 * -1 to skip nothing); -1 if there is none. Ties go to the lower index.
 */
export function bestRendezvous(
  set: RendezvousSet,
  keyHash: number,
  usable: ArrayLike<number>,
  skipA: number,
  skipB: number,
): number {
  const { seeds, weights } = set;
  const count = seeds.length;
  let best = -1;
  let bestScore = -1;
  if (set.uniform) {
    for (let i = 0; i < count; i++) {
      if (i === skipA || i === skipB || !usable[i]) continue;
      const score = rendezvousDraw(keyHash, seeds[i] as number);
      if (score > bestScore) {
        bestScore = score;
        best = i;
      }
    }
    return best;
  }
  for (let i = 0; i < count; i++) {
    if (i === skipA || i === skipB || !usable[i]) continue;
    const score = rendezvousScore(keyHash, seeds[i] as number, weights[i] as number);
    if (score > bestScore) {
      bestScore = score;
      best = i;
    }
  }
  return best;
}

/** Every backend except `skip`, best first: the order in which `bestRendezvous` would pick them. */
export function rendezvousOrder(set: RendezvousSet, keyHash: number, skip: number): number[] {
  const ranked: { index: number; score: number }[] = [];
  for (let i = 0; i < set.seeds.length; i++) {
    if (i === skip) continue;
    const seed = set.seeds[i] as number;
    const score = set.uniform ? rendezvousDraw(keyHash, seed) : rendezvousScore(keyHash, seed, set.weights[i] as number);
    ranked.push({ index: i, score });
  }
  ranked.sort((a, b) => b.score - a.score || a.index - b.index);
  return ranked.map((entry) => entry.index);
}
