import { randomInt } from 'node:crypto';

/**
 * A seeded pseudo-random sequence in [0, 1) (mulberry32): the same seed and stream give the same
 * numbers, so a randomised test can print its seed and be replayed with it. Separate streams (one
 * per concurrent task) keep each task's numbers the same however the tasks interleave.
 */
export function seededRandom(seed: number, stream = 0): () => number {
  let state = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed named by the environment variable `name` (an integer from 0 to 2³²−1), or a fresh one. */
export function seedFrom(name: string): number {
  const given = process.env[name];
  if (given === undefined || given === '') return randomInt(0, 2 ** 32);
  const seed = Number(given);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new Error(`${name}=${given}: a seed is an integer from 0 to 4294967295`);
  return seed;
}
