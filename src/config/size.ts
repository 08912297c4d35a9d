import { integerOrText } from './units.js';

/** A byte size: `<integer><unit>` with B, KB, MB or GB (1024-based, as nginx reads k and m). */
export const SIZE_PATTERN = '^\\d+(?:B|KB|MB|GB)$';

const SIZE = /^(\d+)(B|KB|MB|GB)$/;
const UNIT_BYTES: Readonly<Record<string, number>> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };

const EXPECTED = 'expected a size like "16KB", "10MB" or integer bytes';

/**
 * A config size in bytes: a string with a unit (`512B`, `16KB`, `10MB`, `1GB`, each 1024-based) or
 * a non-negative integer, which counts bytes. Throws an Error whose message says what was expected.
 */
export function parseSize(input: unknown): number {
  const value = integerOrText(input, EXPECTED);
  if (typeof value === 'number') return value;
  const match = SIZE.exec(value);
  if (match === null) {
    // Lower-case and spaced units are the likeliest slips; say how to write what was probably meant.
    const loose = /^(\d+)\s*([kmg]?)i?b?$/i.exec(value);
    const hint = loose === null ? '' : ` (write "${loose[1]}${(loose[2] ?? '').toUpperCase()}B")`;
    throw new Error(`${EXPECTED}, got ${JSON.stringify(value)}${hint}`);
  }
  const bytes = Number(match[1]) * (UNIT_BYTES[match[2] as string] as number);
  if (!Number.isSafeInteger(bytes)) throw new Error(`size ${JSON.stringify(value)} is too large`);
  return bytes;
}

/** Bytes the way a person writes them in the config: `16384` → `"16KB"`, `1000` → `"1000B"`. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [['GB', 1024 ** 3], ['MB', 1024 ** 2], ['KB', 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}
