/**
 * Fixed, seedless 32-bit hashing for selection. Every replica (and every restart) must map a client
 * key to the same number, so nothing here depends on the process, the clock or randomness.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** murmur3's `fmix32` finaliser: a bijection on 32 bits in which every input bit flips about half the output bits. */
export function mix32(a: number): number {
  a ^= a >>> 16;
  a = Math.imul(a, 0x85ebca6b);
  a ^= a >>> 13;
  a = Math.imul(a, 0xc2b2ae35);
  a ^= a >>> 16;
  return a >>> 0;
}

/**
 * murmur3 (x86, 32-bit) over the string's UTF-16 code units, two per block, so the result equals
 * murmur3 of the string's UTF-16LE bytes. Working on code units avoids encoding the key first.
 */
function murmur3(text: string, seed: number): number {
  const length = text.length;
  const blockEnd = length & ~1;
  let h = seed | 0;
  let i = 0;
  for (; i < blockEnd; i += 2) {
    let k = text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, C2);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  if (i < length) {
    let k = text.charCodeAt(i);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, C2);
  }
  return mix32(h ^ (length * 2));
}

/** Hashes a client key (address, header value or cookie nonce) to an unsigned 32-bit integer. */
export function hashKey(key: string): number {
  return murmur3(key, 0);
}

/**
 * Hashes a backend id with a salt; different salts give independent values for the same id
 * (Maglev offset, Maglev skip, rendezvous seed).
 */
export function hashSeed(id: string, salt: number): number {
  return murmur3(id, salt);
}
