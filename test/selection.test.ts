import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { hashKey, mix32 } from '../src/selection/hash.js';
import type { WeightedBackend } from '../src/selection/maglev.js';
import { buildMaglevTable, DEFAULT_MAGLEV_TABLE_SIZE, maglevTableSize } from '../src/selection/maglev.js';
import { bestRendezvous, rendezvousScore, rendezvousSet } from '../src/selection/rendezvous.js';
import { WeightedRoundRobin } from '../src/selection/round-robin.js';
import { Selector } from '../src/selection/selector.js';

/** xorshift32: a fixed-seed generator, so every run sees the same keys. */
function prng(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
}

/** Client addresses as ip-mode affinity sees them: three IPv4 to one IPv6. */
function clientAddresses(count: number, seed: number): string[] {
  const next = prng(seed);
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    const r = next();
    if (i % 4 === 3) {
      const s = next();
      keys.push(`2001:db8:${(r >>> 16).toString(16)}:${(r & 0xffff).toString(16)}::${(s >>> 16).toString(16)}:${(s & 0xffff).toString(16)}`);
    } else {
      keys.push(`${r >>> 24}.${(r >>> 16) & 255}.${(r >>> 8) & 255}.${r & 255}`);
    }
  }
  return keys;
}

/** Uniform key hashes: what the selector sees once a key is hashed (used where only the selector is under test). */
function keyHashes(count: number, seed: number): Uint32Array {
  const next = prng(seed);
  const hashes = new Uint32Array(count);
  for (let i = 0; i < count; i++) hashes[i] = mix32(next());
  return hashes;
}

function equalBackends(count: number, prefix = 'app'): WeightedBackend[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}-${i + 1}`, weight: 1 }));
}

function weighted(weights: readonly number[]): WeightedBackend[] {
  return weights.map((weight, i) => ({ id: `app-${i + 1}`, weight }));
}

function allUsable(count: number): Uint8Array {
  return new Uint8Array(count).fill(1);
}

function bitCount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

// Pinned values: a change here re-pins every client while old and new versions serve side by side.
const PINNED_BACKENDS = weighted([1, 1, 2, 1, 3]);
const PINNED: readonly [key: string, hash: number, order: readonly number[]][] = [
  ['203.0.113.7', 490964682, [4, 1, 2, 3, 0]],
  ['198.51.100.23', 2878713285, [4, 2, 3, 1, 0]],
  ['10.0.0.1', 3185433682, [2, 1, 3, 4, 0]],
  ['10.0.0.2', 3105260043, [4, 1, 2, 0, 3]],
  ['2001:db8::1', 1038541347, [3, 2, 1, 0, 4]],
  ['2001:db8:85a3::8a2e:370:7334', 2480248552, [2, 1, 3, 4, 0]],
  ['::1', 3275092981, [2, 4, 0, 3, 1]],
  ['Zm9vYmFyYmF6cXV4', 2053643881, [4, 2, 1, 0, 3]],
  ['session-42', 3761888105, [3, 0, 1, 4, 2]],
];

describe('hashKey', () => {
  it('is murmur3 (x86, 32-bit) of the UTF-16LE bytes, seed 0', () => {
    // Reference values computed with an independent byte-wise murmur3 checked against its published vectors.
    expect(hashKey('')).toBe(0);
    expect(hashKey('a')).toBe(1867108634);
    expect(hashKey('10.0.0.1')).toBe(3185433682);
    expect(hashKey('2001:db8::1')).toBe(1038541347);
  });

  it('scatters keys that differ only in their last character', () => {
    const keys = clientAddresses(5000, 11);
    let flipped = 0;
    let pairs = 0;
    for (const key of keys) {
      const last = key.charCodeAt(key.length - 1);
      const sibling = key.slice(0, -1) + String.fromCharCode(last ^ 1);
      flipped += bitCount((hashKey(key) ^ hashKey(sibling)) >>> 0);
      pairs++;
    }
    expect(flipped / pairs).toBeGreaterThan(15.8);
    expect(flipped / pairs).toBeLessThan(16.2);
  });
});

describe('Selector: same key, same backend', () => {
  it('matches the pinned hashes and preference orders', () => {
    const selector = new Selector(PINNED_BACKENDS);
    const usable = allUsable(PINNED_BACKENDS.length);
    for (const [key, hash, order] of PINNED) {
      expect(hashKey(key), key).toBe(hash);
      expect(selector.order(hash), key).toEqual(order);
      expect(selector.primary(hash), key).toBe(order[0]);
      expect(selector.pick(hash, usable), key).toBe(order[0]);
    }
  });

  it('gives the same answers on repeated calls and from a fresh selector', () => {
    const keys = clientAddresses(2000, 5);
    const first = new Selector(equalBackends(7));
    const second = new Selector(equalBackends(7));
    const usable = allUsable(7);
    usable[2] = 0;
    for (const key of keys) {
      const index = first.pick(hashKey(key), usable);
      expect(first.pick(hashKey(key), usable)).toBe(index);
      expect(second.pick(hashKey(key), usable)).toBe(index);
    }
  });

  it('keeps every key on the same backend id when the config lists backends in another order', () => {
    const listed = weighted([1, 2, 1, 3, 1, 2, 1]);
    const shuffled = [3, 0, 6, 1, 5, 2, 4].map((i) => listed[i] as WeightedBackend);
    const a = new Selector(listed);
    const b = new Selector(shuffled);
    for (const hash of keyHashes(20_000, 71)) {
      const idsA = a.order(hash).map((index) => (listed[index] as WeightedBackend).id);
      const idsB = b.order(hash).map((index) => (shuffled[index] as WeightedBackend).id);
      expect(idsB).toEqual(idsA);
    }
  });

  const builtSelector = fileURLToPath(new URL('../dist/src/selection/selector.js', import.meta.url));
  // `npm test` builds dist/ first; without it this must fail, not pass quietly.
  it('gives the same orders in another process (built module in dist/)', () => {
    expect(existsSync(builtSelector), `${builtSelector} is missing: run npm run build`).toBe(true);
    const keys = clientAddresses(500, 23);
    const backends = weighted([1, 2, 1, 3, 1, 1, 2]);
    const hashUrl = pathToFileURL(builtSelector.replace(/selector\.js$/, 'hash.js')).href;
    const script = `
      import { Selector } from ${JSON.stringify(pathToFileURL(builtSelector).href)};
      import { hashKey } from ${JSON.stringify(hashUrl)};
      const { backends, keys } = JSON.parse(process.argv[1]);
      const selector = new Selector(backends);
      process.stdout.write(JSON.stringify(keys.map((key) => selector.order(hashKey(key)))));
    `;
    const output = execFileSync(process.execPath, ['--input-type=module', '-e', script, JSON.stringify({ backends, keys })], {
      encoding: 'utf8',
    });
    const selector = new Selector(backends);
    expect(JSON.parse(output)).toEqual(keys.map((key) => selector.order(hashKey(key))));
  });
});

describe('Selector: balance', () => {
  // Key counts make ±5 % at least 5 binomial standard deviations.
  it.each([
    { backends: 3, keys: 30_000 },
    { backends: 10, keys: 120_000 },
    { backends: 50, keys: 640_000 },
  ])('spreads $keys client addresses over $backends equal backends within ±5 %', ({ backends, keys }) => {
    const selector = new Selector(equalBackends(backends));
    const usable = allUsable(backends);
    const counts = new Array<number>(backends).fill(0);
    for (const key of clientAddresses(keys, backends)) counts[selector.pick(hashKey(key), usable)]++;
    const fair = keys / backends;
    expect(Math.max(...counts) / fair).toBeLessThanOrEqual(1.05);
    expect(Math.min(...counts) / fair).toBeGreaterThanOrEqual(0.95);
  });

  it('spreads sequential addresses (10.0.x.y) evenly too', () => {
    const selector = new Selector(equalBackends(3));
    const usable = allUsable(3);
    const counts = [0, 0, 0];
    for (let x = 0; x < 256; x++) for (let y = 0; y < 256; y++) counts[selector.pick(hashKey(`10.0.${x}.${y}`), usable)]++;
    for (const count of counts) expect(Math.abs(count / (65536 / 3) - 1)).toBeLessThanOrEqual(0.05);
  });

  it('honours weights 1, 2, 3, 4 as 10/20/30/40 % within ±5 % of each share', () => {
    const weights = [1, 2, 3, 4];
    const selector = new Selector(weighted(weights));
    const usable = allUsable(4);
    const keys = clientAddresses(200_000, 41);
    const counts = [0, 0, 0, 0];
    for (const key of keys) counts[selector.pick(hashKey(key), usable)]++;
    weights.forEach((weight, i) => {
      expect(Math.abs((counts[i] as number) / ((keys.length * weight) / 10) - 1)).toBeLessThanOrEqual(0.05);
    });
  });

  it.each([
    { name: '3 equal', weights: [1, 1, 1] },
    { name: '10 equal', weights: new Array<number>(10).fill(1) },
    { name: '50 equal', weights: new Array<number>(50).fill(1) },
    { name: '100 equal', weights: new Array<number>(100).fill(1) },
    { name: '1, 2, 3, 4', weights: [1, 2, 3, 4] },
    { name: 'fractional', weights: [1, 5, 10, 3, 0.5, 2, 7] },
    { name: '20 mixed', weights: Array.from({ length: 20 }, (_, i) => (i % 5) + 1) },
  ])('gives each backend its weighted share of Maglev slots ±1 ($name)', ({ weights }) => {
    const table = buildMaglevTable(weighted(weights));
    expect(table.length).toBe(DEFAULT_MAGLEV_TABLE_SIZE);
    const counts = new Array<number>(weights.length).fill(0);
    for (const index of table) counts[index]++;
    const total = weights.reduce((sum, weight) => sum + weight, 0);
    counts.forEach((count, i) => {
      expect(Math.abs(count - (table.length * (weights[i] as number)) / total)).toBeLessThan(1);
    });
  });

  it('sizes the table to at least 100 slots per backend, prime', () => {
    expect(maglevTableSize(3)).toBe(65537);
    expect(maglevTableSize(655)).toBe(65537);
    expect(maglevTableSize(1000)).toBe(100003);
  });
});

describe('Selector: a backend becoming unusable', () => {
  // Enough keys that each survivor expects ≥ 2,500 moved keys: max/mean ≤ 1.10 is then ≥ 5 σ.
  const cases = [3, 10, 50].flatMap((backends) => [
    { backends, down: [Math.floor(backends / 2)] },
    { backends, down: [0, backends - 1] },
  ]);
  it.each(cases)('moves only the keys of $down among $backends backends, evenly', ({ backends, down }) => {
    const survivors = backends - down.length;
    const keyCount = Math.max(30_000, Math.ceil((2600 * survivors * backends) / down.length));
    const selector = new Selector(equalBackends(backends));
    const usable = allUsable(backends);
    const degraded = allUsable(backends);
    for (const index of down) degraded[index] = 0;

    const received = new Array<number>(backends).fill(0);
    let movedOthers = 0;
    let orphaned = 0;
    for (const hash of keyHashes(keyCount, backends * 7 + down.length)) {
      const before = selector.pick(hash, usable);
      const after = selector.pick(hash, degraded);
      if (down.includes(before)) {
        if (after < 0 || down.includes(after)) orphaned++;
        else received[after]++;
      } else if (after !== before) {
        movedOthers++;
      }
    }
    expect(movedOthers).toBe(0);
    expect(orphaned).toBe(0);
    const spread = received.filter((_, i) => !down.includes(i));
    const mean = spread.reduce((sum, count) => sum + count, 0) / spread.length;
    expect(mean).toBeGreaterThanOrEqual(2500);
    expect(Math.max(...spread) / mean).toBeLessThanOrEqual(1.1);
    expect(Math.min(...spread) / mean).toBeGreaterThanOrEqual(0.9);
  });

  it('spreads the moved keys by the survivors’ weights', () => {
    const weights = [1, 2, 3, 4];
    const selector = new Selector(weighted(weights));
    const usable = allUsable(4);
    const degraded = Uint8Array.from([1, 1, 1, 0]);
    const received = [0, 0, 0];
    for (const hash of keyHashes(200_000, 99)) {
      if (selector.pick(hash, usable) === 3) received[selector.pick(hash, degraded)]++;
    }
    const moved = received.reduce((sum, count) => sum + count, 0);
    [1, 2, 3].forEach((weight, i) => {
      expect(Math.abs((received[i] as number) / ((moved * weight) / 6) - 1)).toBeLessThanOrEqual(0.05);
    });
  });

  it('ranks equal weights exactly as the weighted score does', () => {
    const set = rendezvousSet(equalBackends(9));
    const usable = allUsable(9);
    for (const hash of keyHashes(5000, 53)) {
      let best = -1;
      let bestScore = -1;
      for (let i = 0; i < 9; i++) {
        const score = rendezvousScore(hash, set.seeds[i] as number, 1);
        if (score > bestScore) [best, bestScore] = [i, score];
      }
      expect(bestRendezvous(set, hash, usable, -1, -1)).toBe(best);
    }
  });

  it('pick is the first usable backend of order(), for any usable set', () => {
    const selector = new Selector(weighted([1, 3, 2, 1, 1, 2]));
    const next = prng(3);
    const usable = new Uint8Array(6);
    for (const hash of keyHashes(5000, 17)) {
      const mask = next() & 63;
      for (let i = 0; i < 6; i++) usable[i] = (mask >>> i) & 1;
      const expected = selector.order(hash).find((index) => usable[index] === 1) ?? -1;
      expect(selector.pick(hash, usable)).toBe(expected);
    }
  });

  it('pickExcept equals pick with the excluded backend marked unusable', () => {
    const selector = new Selector(equalBackends(8));
    const next = prng(8);
    const usable = new Uint8Array(8);
    const without = new Uint8Array(8);
    let checked = 0;
    for (const hash of keyHashes(20_000, 29)) {
      const mask = next() & 255;
      const exclude = (next() % 9) - 1; // -1 excludes nothing
      for (let i = 0; i < 8; i++) usable[i] = without[i] = (mask >>> i) & 1;
      if (exclude >= 0) without[exclude] = 0;
      expect(selector.pickExcept(hash, usable, exclude)).toBe(selector.pick(hash, without));
      checked++;
    }
    expect(checked).toBe(20_000);
  });

  it('returns -1 when nothing is usable, or there are no backends', () => {
    const selector = new Selector(equalBackends(4));
    const none = new Uint8Array(4);
    expect(selector.pick(12345, none)).toBe(-1);
    expect(selector.pickExcept(12345, none, 1)).toBe(-1);
    expect(selector.pickExcept(12345, Uint8Array.from([0, 1, 0, 0]), 1)).toBe(-1);
    const empty = new Selector([]);
    expect(empty.size).toBe(0);
    expect(empty.pick(12345, none)).toBe(-1);
    expect(empty.pickExcept(12345, none, -1)).toBe(-1);
    expect(empty.primary(12345)).toBe(-1);
    expect(empty.order(12345)).toEqual([]);
  });

  it('rejects duplicate ids and invalid weights', () => {
    expect(() => new Selector([{ id: 'a', weight: 1 }, { id: 'a', weight: 1 }])).toThrow(/duplicate backend id "a"/);
    expect(() => new Selector([{ id: 'a', weight: -1 }])).toThrow(RangeError);
    expect(() => new Selector([{ id: 'a', weight: 0 }])).toThrow(RangeError);
    expect(() => new WeightedRoundRobin([1, 0])).toThrow(RangeError);
    expect(() => new Selector([{ id: 'a', weight: Number.NaN }])).toThrow(RangeError);
    expect(() => buildMaglevTable(equalBackends(3), 65536)).toThrow(/prime/);
  });
});

describe('Selector: backends added to or removed from the set', () => {
  /** Slot owners by id: keys hash uniformly over slots, so slot fractions are key fractions, without sampling noise. */
  function slotOwners(backends: readonly WeightedBackend[]): string[] {
    return Array.from(buildMaglevTable(backends), (index) => (backends[index] as WeightedBackend).id);
  }

  // Maglev reshuffles a few slots among the existing backends too; bounds are the measured values, rounded up.
  it.each([
    { backends: 3, maxMovedRatio: 1.01, maxBetweenOld: 0.001 },
    { backends: 10, maxMovedRatio: 1.03, maxBetweenOld: 0.003 },
    { backends: 50, maxMovedRatio: 1.21, maxBetweenOld: 0.0045 },
  ])('adding one to $backends moves its fair share to it, and little else', ({ backends, maxMovedRatio, maxBetweenOld }) => {
    const before = slotOwners(equalBackends(backends));
    const after = slotOwners(equalBackends(backends + 1));
    const added = `app-${backends + 1}`;
    let toNew = 0;
    let betweenOld = 0;
    for (let slot = 0; slot < before.length; slot++) {
      if (before[slot] !== after[slot]) {
        if (after[slot] === added) toNew++;
        else betweenOld++;
      }
    }
    const fair = 1 / (backends + 1);
    expect(Math.abs(toNew / before.length / fair - 1)).toBeLessThan(0.001);
    expect((toNew + betweenOld) / before.length / fair).toBeLessThanOrEqual(maxMovedRatio);
    expect((toNew + betweenOld) / before.length / fair).toBeGreaterThanOrEqual(1);
    expect(betweenOld / before.length).toBeLessThanOrEqual(maxBetweenOld);
  });

  it.each([
    { backends: 3, maxBetweenOld: 0.001 },
    { backends: 10, maxBetweenOld: 0.0035 },
    { backends: 50, maxBetweenOld: 0.005 },
  ])('removing one of $backends + 1 moves its keys and few others', ({ backends, maxBetweenOld }) => {
    const full = equalBackends(backends + 1);
    const removed = (full[Math.floor(backends / 2)] as WeightedBackend).id;
    const before = slotOwners(full);
    const after = slotOwners(full.filter((backend) => backend.id !== removed));
    let own = 0;
    let betweenOld = 0;
    for (let slot = 0; slot < before.length; slot++) {
      if (before[slot] === removed) own++;
      else if (before[slot] !== after[slot]) betweenOld++;
    }
    expect(Math.abs(own / before.length / (1 / (backends + 1)) - 1)).toBeLessThan(0.001);
    expect(betweenOld / before.length).toBeLessThanOrEqual(maxBetweenOld);
  });

  it('adding a backend leaves the fallback order of the others unchanged', () => {
    const small = new Selector(equalBackends(5));
    const large = new Selector(equalBackends(6));
    for (const hash of keyHashes(2000, 61)) {
      const fallback = (selector: Selector): number[] => selector.order(hash).slice(1).filter((index) => index < 5);
      const smallFallback = fallback(small);
      const largeFallback = fallback(large);
      // Same relative rendezvous order, apart from each set's Maglev first choice.
      const common = smallFallback.filter((index) => largeFallback.includes(index));
      expect(largeFallback.filter((index) => common.includes(index))).toEqual(common);
    }
  });
});

describe('WeightedRoundRobin', () => {
  it('interleaves like nginx: weights 5, 1, 1 → a a b a c a a', () => {
    const roundRobin = new WeightedRoundRobin([5, 1, 1]);
    const usable = allUsable(3);
    expect(Array.from({ length: 14 }, () => roundRobin.next(usable))).toEqual([0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
  });

  it('gives exact proportions over every full cycle', () => {
    const weights = [1, 2, 3, 4];
    const roundRobin = new WeightedRoundRobin(weights);
    const usable = allUsable(4);
    for (let cycle = 0; cycle < 25; cycle++) {
      const counts = [0, 0, 0, 0];
      for (let i = 0; i < 10; i++) counts[roundRobin.next(usable)]++;
      expect(counts).toEqual(weights);
    }
  });

  it('skips unusable backends and keeps the others in proportion', () => {
    const roundRobin = new WeightedRoundRobin([1, 2, 3, 4]);
    const usable = Uint8Array.from([1, 1, 1, 0]);
    for (let cycle = 0; cycle < 10; cycle++) {
      const counts = [0, 0, 0, 0];
      for (let i = 0; i < 6; i++) counts[roundRobin.next(usable)]++;
      expect(counts).toEqual([1, 2, 3, 0]);
    }
  });

  it('returns -1 when nothing is usable', () => {
    expect(new WeightedRoundRobin([1, 1]).next(new Uint8Array(2))).toBe(-1);
    expect(new WeightedRoundRobin([]).next(new Uint8Array(0))).toBe(-1);
  });
});
