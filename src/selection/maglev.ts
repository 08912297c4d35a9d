import { hashSeed } from './hash.js';

/** A backend as selection sees it: a stable id and a relative weight. */
export interface WeightedBackend {
  readonly id: string;
  readonly weight: number;
}

/** Envoy's default table size: prime, and ≥ 100 slots per backend up to 655 backends. */
export const DEFAULT_MAGLEV_TABLE_SIZE = 65537;

/** Slot values are Uint16 indices and 0xffff marks an empty slot while building. */
export const MAX_BACKENDS = 0xffff;

const EMPTY = 0xffff;
const OFFSET_SALT = 0x6d61676c; // independent hashes of the id for offset and skip, as Maglev requires
const SKIP_SALT = 0x736b6970;

/** Smallest prime ≥ max(65537, 100 × backends): fewer slots per backend would cost balance. */
export function maglevTableSize(backendCount: number): number {
  let size = Math.max(DEFAULT_MAGLEV_TABLE_SIZE, 100 * backendCount);
  while (!isPrime(size)) size++;
  return size;
}

/** The weights selection uses, validated: every backend has a positive share. */
export function effectiveWeights(backends: readonly WeightedBackend[]): Float64Array {
  const weights = new Float64Array(backends.length);
  backends.forEach((backend, index) => {
    if (!Number.isFinite(backend.weight) || backend.weight <= 0) {
      throw new RangeError(`backend "${backend.id}": weight must be a finite number > 0, got ${backend.weight}`);
    }
    weights[index] = backend.weight;
  });
  return weights;
}

/**
 * Builds a weighted Maglev lookup table: slot → index into `backends`. Each backend claims slots
 * along its own permutation of the table (offset and skip from two hashes of its id), in turns
 * paced by weight the way Envoy's `MaglevTable` paces them with `target_weight`. Because the
 * permutations depend only on ids, a set that gains or loses one backend keeps most slots.
 *
 * Envoy's pacing alone can leave a heavy backend a few slots short of its share; here each backend
 * also stops at its largest-remainder quota, so every slot count is within 1 of
 * `size × weight / total`.
 *
 * Backends take their turns in id order, not list order, so reordering the config moves no key.
 */
export function buildMaglevTable(backends: readonly WeightedBackend[], size = maglevTableSize(backends.length)): Uint16Array {
  const count = backends.length;
  if (count === 0) throw new RangeError('a Maglev table needs at least one backend');
  if (count > MAX_BACKENDS) throw new RangeError(`at most ${MAX_BACKENDS} backends, got ${count}`);
  if (!Number.isInteger(size) || size < count || size > 0x7fffffff || !isPrime(size)) {
    throw new RangeError(`Maglev table size must be a prime ≥ the backend count (${count}), got ${size}`);
  }
  assertUniqueIds(backends);

  const weights = effectiveWeights(backends);
  const turnOrder = idOrder(backends);
  const quotas = apportion(weights, size, turnOrder);
  let maxWeight = 0;
  for (const weight of weights) maxWeight = Math.max(maxWeight, weight);

  const position = new Int32Array(count);
  const skip = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const id = (backends[i] as WeightedBackend).id;
    position[i] = hashSeed(id, OFFSET_SALT) % size;
    skip[i] = (hashSeed(id, SKIP_SALT) % (size - 1)) + 1;
  }

  const table = new Uint16Array(size).fill(EMPTY);
  const claimed = new Int32Array(count);
  const target = new Float64Array(count);
  let filled = 0;
  for (let turn = 0; filled < size; turn++) {
    for (let k = 0; k < count && filled < size; k++) {
      const i = turnOrder[k] as number;
      // A backend of maximum weight claims a slot every turn; one of a third that weight, every third turn.
      if (claimed[i] === quotas[i] || turn * (weights[i] as number) < (target[i] as number)) continue;
      target[i] = (target[i] as number) + maxWeight;
      const step = skip[i] as number;
      let slot = position[i] as number;
      while (table[slot] !== EMPTY) {
        slot += step;
        if (slot >= size) slot -= size;
      }
      table[slot] = i;
      slot += step;
      position[i] = slot >= size ? slot - size : slot;
      claimed[i] = (claimed[i] as number) + 1;
      filled++;
    }
  }
  return table;
}

/** Indices of `backends` sorted by id (UTF-16 code units, so every process sorts alike). */
function idOrder(backends: readonly WeightedBackend[]): Int32Array {
  const order = Int32Array.from(backends.keys());
  const ids = backends.map((backend) => backend.id);
  return order.sort((a, b) => {
    const idA = ids[a] as string;
    const idB = ids[b] as string;
    return idA < idB ? -1 : idA > idB ? 1 : 0;
  });
}

/** Splits `size` slots in proportion to weight (largest remainder, ties to the earlier in `rank`). */
function apportion(weights: Float64Array, size: number, rank: Int32Array): Int32Array {
  let total = 0;
  for (const weight of weights) total += weight;
  const quotas = new Int32Array(weights.length);
  const remainders: { index: number; remainder: number }[] = [];
  let assigned = 0;
  for (const index of rank) {
    const exact = (size * (weights[index] as number)) / total;
    const quota = Math.floor(exact);
    quotas[index] = quota;
    assigned += quota;
    remainders.push({ index, remainder: exact - quota });
  }
  // Array#sort is stable, so equal remainders keep `rank` order.
  remainders.sort((a, b) => b.remainder - a.remainder);
  for (let k = 0; assigned < size; k++, assigned++) {
    const index = (remainders[k % remainders.length] as { index: number }).index;
    quotas[index] = (quotas[index] as number) + 1;
  }
  return quotas;
}

function assertUniqueIds(backends: readonly WeightedBackend[]): void {
  const seen = new Set<string>();
  for (const { id } of backends) {
    if (seen.has(id)) throw new RangeError(`duplicate backend id "${id}"`);
    seen.add(id);
  }
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}
